"""Ship a new model version safely: publish, canary, promote, roll back. docs/deploy.md.

    python -m serving rollout publish  --repository R --version-dir models/imdb/N
    python -m serving rollout init     --config models.config --repository R --version N
    python -m serving rollout canary   --config models.config [--version N] --rest-url URL ...
    python -m serving rollout promote  --config models.config --rest-url URL ...
    python -m serving rollout rollback --config models.config --rest-url URL ...
    python -m serving rollout status   --config models.config --rest-url URL ...

The servers read their versions from a **model repository** (``serving/repository.py``): a
folder, ``gs://`` or ``s3://`` (through the sync sidecar). ``models.config`` says which versions
they load and what the labels point at; it is the whole rollout state, and every step below is
one edit of it. The servers poll it (``--model_config_file_poll_wait_seconds``), so no step
restarts or rebuilds anything. On Kubernetes (``--namespace``), the file is applied as the
ConfigMap the pods mount; the file in the overlay stays the source of truth (commit it).

- **publish**: check an export against the serving contract (``serving/export_check.py``, as
  ``make train`` does), then upload it; it becomes visible only when complete (its manifest is
  written last).
- **init**: write a first ``models.config`` whose ``stable`` is a published version.
- **canary N** (default: the highest published version): (1) load N beside ``stable`` and wait
  until every server has it AVAILABLE; a version that fails to load is taken out of the config
  again and the command says why (``stable`` never stops serving); (2) point ``canary`` at N;
  (3) smoke-test ``/labels/canary`` on every server; (4) compare canary with stable on reference
  reviews (agreement, probability shift, p99 latency, errors) against thresholds and print a
  verdict (exit 1 on FAIL; the canary stays up for a look until ``rollback``).
- **promote**: ``stable`` -> the canary's version; the old one stays loaded as ``previous``.
- **rollback**: withdraw a canary (``canary`` and its version leave the config) or, after a
  promote, move ``stable`` back to ``previous``. The version rolled back from is unloaded.

Each step edits one model (``--model-name``, default the contract's) of a ``models.config`` that
may list several; other models, and labels other than these three, are left as they are.

A label only moves to a version that is AVAILABLE on every server, which is TF Serving's own
rule for labels (it refuses the reload otherwise), so requests to ``/labels/stable`` never fail
during a step. ``--dry-run`` prints the new ``models.config`` (and the kubectl commands) and
changes nothing.

The package, by job: ``state`` (the models.config edits), ``fleet`` (reaching the servers:
local REST URLs, or kubectl on a cluster), ``comparison`` (canary against stable), ``verbs``
(the steps above) and ``cli`` (``main``). Importing the package imports none of them.
"""


class RolloutError(Exception):
    """A step cannot go on; the message says why and what state the servers are in."""
