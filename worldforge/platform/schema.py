"""The base class of every config section.

Kept apart from `config.py` so that area config modules (`worldforge/data/config.py`, ...) can
import it while `config.py` composes them into the root config.
"""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
