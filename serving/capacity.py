"""Capacity plan: a measured load-test sweep and a traffic target in, replicas, HPA settings and
batching parameters out.

The arithmetic, stated so that an operator can check it:
- **Per-replica capacity** = the best requests/s (answered OK) that one replica sustained with
  the target's reviews per request in a step that held: p99 within the SLO and errors within
  the error budget, the load test's own rule (``serving.loadtest.step_holds``; the open loop's
  maximum sustainable rate when the sweep has one, otherwise the best closed-loop step),
  divided by the replicas that served the measurement.
- **Replicas for the peak** = ceil(target / (capacity x ``max_utilisation``)): pods run below
  the rate at which their p99 reached the SLO, leaving room for bursts between HPA decisions.
- **minReplicas** = that + 1, so that losing one pod (a node drain, a crash) still carries the
  peak; never below 2 (the PodDisruptionBudget keeps one pod up).
- **maxReplicas** = 2 x minReplicas: room for twice the planned peak.
- **HPA CPU target** = ``max_utilisation`` as a percentage of the pod's CPU request.
- **Batching** follows TF Serving's CPU advice: one batch thread per CPU, no batch timeout when
  requests already carry many reviews, 1 ms otherwise (lone reviews wait briefly for company),
  a short queue (UNAVAILABLE quickly rather than latency without bound).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from serving.loadtest import DEFAULT_ERROR_BUDGET, StepResult, step_holds

# Share of the measured capacity a pod is planned to run at; also the HPA's CPU target, as in
# k8s/base/hpa.yaml (CPU use grows with the request rate on these CPU-bound pods).
DEFAULT_MAX_UTILISATION = 0.65
# Largest request (reviews) the batching config accepts, and batches it runs at most.
MAX_BATCH_SIZE = 512
MAX_EXECUTION_BATCH_SIZE = 128


class CapacityError(Exception):
    """The sweep holds no step that can plan the target."""


@dataclass(frozen=True)
class CapacityTarget:
    target_rps: float
    reviews_per_request: int
    slo_p99_ms: float
    transport: str = "gRPC"
    measured_replicas: int = 1
    cpus_per_pod: int = 2
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    # Share of a step's requests that may fail for it to count: the load test's --error-budget.
    error_budget: float = DEFAULT_ERROR_BUDGET

    def __post_init__(self) -> None:
        if self.target_rps <= 0 or self.reviews_per_request <= 0 or self.slo_p99_ms <= 0:
            raise ValueError("target requests/s, reviews per request and SLO must be positive")
        if self.measured_replicas < 1 or self.cpus_per_pod < 1:
            raise ValueError("measured replicas and CPUs per pod must be at least 1")
        if not 0 < self.max_utilisation <= 1:
            raise ValueError(f"max utilisation must be in (0, 1], got {self.max_utilisation}")
        if not 0 <= self.error_budget < 1:
            raise ValueError(f"error budget must be in [0, 1), got {self.error_budget}")


@dataclass(frozen=True)
class CapacityPlan:
    per_replica_rps: float
    source: str
    replicas_for_peak: int
    min_replicas: int
    max_replicas: int
    hpa_cpu_target_percent: int
    batching: dict[str, int]


def plan_capacity(steps: list[dict], target: CapacityTarget) -> CapacityPlan:
    """The plan for ``target`` from the ``steps`` of a load-test report (``results.json``).

    Raises:
        CapacityError: no step of that transport and request size held (``step_holds``), or a
            step is not one of a load-test report.
    """
    try:
        results = [StepResult.from_report(step) for step in steps]
    except ValueError as error:
        raise CapacityError(f"not a load-test report: {error}") from error
    usable = [
        step
        for step in results
        if step.transport == target.transport
        and step.reviews_per_request == target.reviews_per_request
        and step_holds(step, target.slo_p99_ms, target.error_budget)
    ]
    open_loop = [step for step in usable if step.mode == "open"]
    candidates = open_loop or usable
    if not candidates:
        raise CapacityError(
            f"no {target.transport} step with {target.reviews_per_request} review(s) per "
            f"request kept p99 within {target.slo_p99_ms:g} ms and errors within the error "
            f"budget ({100 * target.error_budget:g}% of requests); measure that request size "
            "(--batch-sizes) or relax the SLO"
        )
    best = max(candidates, key=lambda step: step.requests_per_second)
    per_replica = best.requests_per_second / target.measured_replicas
    load = (
        f"{best.target_rate:,.0f} requests/s offered"
        if best.mode == "open"
        else f"{best.concurrency} clients"
    )
    errors = f"{best.error_count} error(s) in {best.requests:,} requests"
    source = (
        f"{best.mode}-loop step, {load}: {best.requests_per_second:,.0f} requests/s at "
        f"p99 {best.latency_ms['p99']:.1f} ms, {errors}, on {target.measured_replicas} replica(s)"
    )
    replicas = max(1, math.ceil(target.target_rps / (per_replica * target.max_utilisation)))
    min_replicas = max(2, replicas + 1)
    return CapacityPlan(
        per_replica_rps=round(per_replica, 1),
        source=source,
        replicas_for_peak=replicas,
        min_replicas=min_replicas,
        max_replicas=2 * min_replicas,
        hpa_cpu_target_percent=round(100 * target.max_utilisation),
        batching={
            "max_batch_size": MAX_BATCH_SIZE,
            "max_execution_batch_size": MAX_EXECUTION_BATCH_SIZE,
            "batch_timeout_micros": 0 if target.reviews_per_request >= 32 else 1000,
            "num_batch_threads": target.cpus_per_pod,
            "max_enqueued_batches": 8 * target.cpus_per_pod,
        },
    )


def batching_config(plan: CapacityPlan) -> str:
    """The plan's ``--batching_parameters_file`` (k8s/base/config/batching.config)."""
    b = plan.batching
    return (
        "# tensorflow_model_server --batching_parameters_file, from `python -m serving capacity`.\n"
        f"max_batch_size {{ value: {b['max_batch_size']} }}\n"
        "enable_large_batch_splitting { value: true }\n"
        f"max_execution_batch_size {{ value: {b['max_execution_batch_size']} }}\n"
        f"batch_timeout_micros {{ value: {b['batch_timeout_micros']} }}\n"
        f"num_batch_threads {{ value: {b['num_batch_threads']} }}\n"
        f"max_enqueued_batches {{ value: {b['max_enqueued_batches']} }}\n"
    )


def hpa_patch(plan: CapacityPlan, name: str = "imdb-sentiment") -> str:
    """A kustomize patch for the overlay's HorizontalPodAutoscaler."""
    return (
        "apiVersion: autoscaling/v2\n"
        "kind: HorizontalPodAutoscaler\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  minReplicas: {plan.min_replicas}\n"
        f"  maxReplicas: {plan.max_replicas}\n"
        "  metrics:\n"
        "    - type: Resource\n"
        "      resource:\n"
        "        name: cpu\n"
        "        target:\n"
        "          type: Utilization\n"
        f"          averageUtilization: {plan.hpa_cpu_target_percent}\n"
    )


def summary(plan: CapacityPlan, target: CapacityTarget) -> str:
    return (
        f"Capacity plan for {target.target_rps:,.0f} requests/s of {target.reviews_per_request} "
        f"review(s) over {target.transport}, p99 <= {target.slo_p99_ms:g} ms:\n"
        f"  per replica: {plan.per_replica_rps:,.0f} requests/s ({plan.source})\n"
        f"  replicas for the peak at {plan.hpa_cpu_target_percent}% of that: "
        f"{plan.replicas_for_peak}; HPA minReplicas {plan.min_replicas} (one pod may be lost), "
        f"maxReplicas {plan.max_replicas}, CPU target {plan.hpa_cpu_target_percent}%\n"
        f"  batching: {', '.join(f'{k} {v}' for k, v in plan.batching.items())}"
    )


def plan_document(plan: CapacityPlan, target: CapacityTarget) -> dict:
    return {"target": asdict(target), "plan": asdict(plan)}
