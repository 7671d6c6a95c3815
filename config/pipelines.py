"""The pipeline catalog: stages per area, loaded from a YAML data file.

Pipelines are data, not code (seed 003: the catalog of states can be extended), so an
operator edits ``config/pipelines.yaml``. A broken file must stop the process at start-up
with a message naming the pipeline and stage at fault, never half-load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

STATES = ("Abierto", "Cerrado")
ROLES = ("account_executive", "area_team", "client", "fleet_manager")
AUDIENCES = ("requester", "fleet_manager")


class PipelineError(ValueError):
    """The pipelines file is unreadable or breaks a rule; the message says where."""


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    state: str
    role: str
    notify: bool = False
    terminal: bool = False
    survey: bool = False
    audience: tuple[str, ...] = ("requester",)
    whatsapp_template: str | None = None

    @property
    def closed(self) -> bool:
        return self.state == "Cerrado"

    def portal_status(self) -> str:
        return f"{self.state}-{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "state": self.state,
            "role": self.role,
            "notify": self.notify,
            "terminal": self.terminal,
            "survey": self.survey,
            "audience": list(self.audience),
        }


@dataclass(frozen=True)
class Pipeline:
    id: str
    label: str
    stages: tuple[Stage, ...]
    _by_name: dict[str, Stage] = field(default_factory=dict, compare=False, repr=False)

    @property
    def first(self) -> Stage:
        return self.stages[0]

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (case and accents as written, spaces folded)."""
        key = " ".join(name.split()).casefold()
        found = self._by_name.get(key)
        if found is None:
            valid = ", ".join(s.name for s in self.stages)
            raise UnknownStage(f"unknown stage {name!r} in pipeline {self.id}; valid stages: {valid}")
        return found

    def names(self) -> list[str]:
        return [s.name for s in self.stages]


class UnknownStage(LookupError):
    """A stage name that the ticket's pipeline does not have; the message lists valid ones."""


class Catalog(dict[str, Pipeline]):
    """All pipelines by id, in file order."""

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        try:
            return self[pipeline_id]
        except KeyError:
            raise UnknownPipeline(
                f"unknown pipeline {pipeline_id!r}; valid pipelines: {', '.join(self)}"
            ) from None

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {pid: [s.as_json() for s in p.stages] for pid, p in self.items()}


class UnknownPipeline(LookupError):
    """A pipeline id not in the catalog; the message lists valid ones."""


def _bool(value: Any, where: str, key: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PipelineError(f"{where}: '{key}' must be true or false, not {value!r}")
    return value


def _stage(raw: Any, where: str) -> Stage:
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: a stage must be a mapping with name, state, ...")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PipelineError(f"{where}: stage without a name")
    where = f"{where} ({name})"
    unknown = set(raw) - {
        "name", "description", "state", "role", "notify", "terminal", "survey", "audience",
        "whatsapp_template",
    }
    if unknown:
        raise PipelineError(f"{where}: unknown keys {sorted(unknown)}")
    state = raw.get("state")
    if state not in STATES:
        raise PipelineError(f"{where}: state must be one of {', '.join(STATES)}, not {state!r}")
    role = raw.get("role", "account_executive")
    if role not in ROLES:
        raise PipelineError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    audience = raw.get("audience", ["requester"])
    if (
        not isinstance(audience, list)
        or not audience
        or any(a not in AUDIENCES for a in audience)
    ):
        raise PipelineError(f"{where}: audience must be a list of {', '.join(AUDIENCES)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PipelineError(f"{where}: description must be text")
    template = raw.get("whatsapp_template")
    if template is not None and not isinstance(template, str):
        raise PipelineError(f"{where}: whatsapp_template must be a Content SID")
    return Stage(
        name=" ".join(name.split()),
        description=description.strip(),
        state=state,
        role=role,
        notify=_bool(raw.get("notify"), where, "notify"),
        terminal=_bool(raw.get("terminal"), where, "terminal"),
        survey=_bool(raw.get("survey"), where, "survey"),
        audience=tuple(audience),
        whatsapp_template=template,
    )


def parse_catalog(data: Any, source: str = "pipelines") -> Catalog:
    """Validate the YAML document and build the catalog; raise PipelineError on any fault."""
    if not isinstance(data, dict) or not data:
        raise PipelineError(f"{source}: expected a mapping of pipeline id to pipeline")
    catalog = Catalog()
    for pid, body in data.items():
        where = f"{source}: pipeline {pid}"
        if not isinstance(pid, str) or not pid.isidentifier():
            raise PipelineError(f"{where}: the id must be a plain word")
        if not isinstance(body, dict) or not isinstance(body.get("stages"), list):
            raise PipelineError(f"{where}: needs a 'stages' list")
        if not body["stages"]:
            raise PipelineError(f"{where}: has no stages")
        stages = tuple(
            _stage(raw, f"{where}, stage {i + 1}") for i, raw in enumerate(body["stages"])
        )
        by_name: dict[str, Stage] = {}
        for stage in stages:
            key = stage.name.casefold()
            if key in by_name:
                raise PipelineError(f"{where}, stage {stage.name}: the name is used twice")
            by_name[key] = stage
        if stages[0].terminal:
            raise PipelineError(f"{where}, stage {stages[0].name}: the first stage cannot be terminal")
        if not any(s.terminal for s in stages):
            raise PipelineError(f"{where}: no stage is terminal")
        for stage in stages:
            if stage.terminal and not stage.closed:
                raise PipelineError(
                    f"{where}, stage {stage.name}: a terminal stage must have state Cerrado"
                )
        label = body.get("label", pid)
        catalog[pid] = Pipeline(id=pid, label=str(label), stages=stages, _by_name=by_name)
    return catalog


def load_catalog(path: Path | str) -> Catalog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the pipelines file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({exc})") from exc
    return parse_catalog(data, str(path))


@lru_cache(maxsize=8)
def cached_catalog(path: str) -> Catalog:
    """The catalog for ``path``, read once per process."""
    return load_catalog(path)
