"""The base class of every config section.

Kept apart from `config.py` so that area config modules (`worldforge/data/config.py`, ...) can
import it while `config.py` composes them into the root config.
"""

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def describe_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config ({error.error_count()} problem{'s' * (error.error_count() > 1)})"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif not key:  # a check across sections names its own keys; its input is the whole config
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)
