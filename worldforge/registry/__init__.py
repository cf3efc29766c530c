"""The MLflow model registry: one registered model per family, a version per registered package.

- `register_package` logs a package as an MLflow pyfunc model (the package folder is its
  artifact; `load_context` calls `load_package`; models-from-code, so nothing is pickled) and
  registers it under the family with tags: `stage`, `parent.model`, `dataset.dvc_md5`,
  `package.md5`, `git.sha`, `metric.<name>` for the key metrics of its `metrics.json`, `eval.device`.
  A version that was evaluated and beats copy-last-frame becomes the `candidate`.
- `promote` checks the gates of `RegistryConfig` against the champion's recorded metrics. Every
  decision, promoted or not, is recorded on the version as its own tag `decision.<id>` (JSON:
  outcome, every check, champion before and after), so no decision overwrites another; the
  latest is summarised in `promotion.last_outcome` / `promotion.failed_checks`.
- The champion's history is kept on the registered model as one tag per event
  (`champion.history.<id>`, JSON), again never overwritten; `rollback` replays it.

Consistency under concurrent promotions: with the embedded SQLite store, promotions and
rollbacks of a project hold an inter-process file lock (`<root>/.worldforge-registry.lock`), so
each sees the champion the previous one left. Against a remote server no lock is shared: a
promotion re-reads the alias after setting it and records `superseded` when another promotion won,
and because decisions and history events each get their own tag, both are kept either way.
"""

from worldforge.registry.config import RegistryConfig
from worldforge.registry.gates import KEY_METRICS, Decision, check_gates
from worldforge.registry.promotion import (
    DECISION_TAG,
    HISTORY_TAG,
    champion_history,
    champion_stack,
    decisions,
    promote,
    rollback,
)
from worldforge.registry.publish import register_package
from worldforge.registry.query import (
    alias_version,
    download_package,
    families,
    get_version,
    parse_models_uri,
    recorded_metrics,
    resolve,
    resolve_version,
    version_of,
    versions,
)
from worldforge.registry.store import CANDIDATE, CHAMPION, RegistryError, client, registry_lock

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "DECISION_TAG",
    "HISTORY_TAG",
    "KEY_METRICS",
    "Decision",
    "RegistryConfig",
    "RegistryError",
    "alias_version",
    "champion_history",
    "champion_stack",
    "check_gates",
    "client",
    "decisions",
    "download_package",
    "families",
    "get_version",
    "parse_models_uri",
    "promote",
    "recorded_metrics",
    "register_package",
    "registry_lock",
    "resolve",
    "resolve_version",
    "rollback",
    "version_of",
    "versions",
]
