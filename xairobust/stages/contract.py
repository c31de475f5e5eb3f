"""The one stage contract, and the provenance chain that ties every artefact to its inputs.

Every stage (train, attack, explain, score, report, manipulate, visualize, import, ...) is a
:class:`Stage` registered in :data:`STAGES`:

* ``Config``                     a typed config dataclass (built with ``xairobust.config.build``);
                                 fields that do not change results (device, paths, batch sizes,
                                 quiet, workers) carry ``metadata=NOT_IDENTITY``;
* ``inputs(run_dir, conf)``      the artefact files its output is computed from (weights,
                                 attribution files, ...), keyed by a role name;
* ``compute(run_dir, conf, resolved, quiet)``  the work: writes the files beside the document and
                                 returns a :class:`Written` (the document without provenance);
* ``outputs(run_dir, conf)``     only where a stage writes several files: the files it writes, the
                                 JSON document that marks completion last (default: ``document``);
* ``hint(run_dir, conf)``        the command a user runs to recompute it.

:meth:`Stage.run` is final and the same for every stage: resolve the inputs, derive the identity
(:func:`config_identity`, the one place that decides which config fields count), ask the one
:func:`is_current`, call ``compute`` and write the document atomically with its provenance block.
It returns the document's path, for every stage.

The JSON document of every output carries a ``provenance`` block (``StageIdentity.block()``):
the stage, its format version, the identity, and the sha256 of every input file at the time it
was computed. One shared check, :func:`is_current`, compares that block with what the inputs and
config are now, and :func:`verify_chain` refuses (one line naming the stale file and the command
that recomputes it) to use an artefact whose inputs have changed since -- so nothing computed
from a replaced model can reach a report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, final

from xairobust.errors import RunError
from xairobust.layout import RunLayout
from xairobust.registry import Registry, import_submodules
from xairobust.runs import file_sha256, read_json

PROVENANCE_KEY = "provenance"
# The sha256 of the document's own body (:func:`body_sha256`), kept in its provenance block, so
# that a hand-edited value in the document itself (a robust accuracy, a mean) is refused on read.
BODY_KEY = "body_sha256"
# The files a stage wrote beside its JSON document (name relative to the document's folder ->
# sha256), so that a hand-edited or damaged CSV / tensor file is refused on read like a stale one.
OUTPUTS_KEY = "outputs"


# Field metadata of a Config: the field does not change results (device, paths, batch sizes,
# quiet, workers), so it is left out of the identity and changing it never recomputes anything.
NOT_IDENTITY: Mapping[str, Any] = MappingProxyType({"identity": False})
# The field counts only when it differs from its default: an option added to a stage later keeps
# the identity (so the stored outputs) of every config that does not use it.
IF_SET: Mapping[str, Any] = MappingProxyType({"identity": "if_set"})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def config_identity(conf: Any, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config fields that determine a stage's output, as plain JSON values.

    The one place that decides what counts: every dataclass field but those marked
    :data:`NOT_IDENTITY` (and :data:`IF_SET` ones left at their default). ``drop`` names fields a
    stage records in another, resolved form (e.g. explainer params validated into their Params).
    """
    from xairobust import config as cfg

    plain = cfg.to_dict(conf)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(conf):
        mode = f.metadata.get("identity", True)
        if mode is False or f.name in drop:
            continue
        if mode == "if_set" and getattr(conf, f.name) == _default(f):
            continue
        out[f.name] = plain[f.name]
    return out


def not_identity(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """``field(default, metadata=NOT_IDENTITY)``: a config field that never changes results."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=NOT_IDENTITY)
    return field(default=default, metadata=NOT_IDENTITY)


@dataclass
class Written:
    """What a stage's ``compute`` made: its JSON document (the contract adds the provenance block
    and writes it, last and atomically) and the files it already wrote beside it, whose sha256
    the document records (:data:`OUTPUTS_KEY`) so that a hand-edited file is refused on read."""

    doc: dict[str, Any]
    files: tuple[Path, ...] = ()


class StaleError(RunError):
    """An artefact was computed from inputs that have changed since (the message says how to redo it)."""


def _load_stages() -> None:
    import_submodules("xairobust.stages")
    import_submodules("xairobust.report")


STAGES: Registry = Registry("stage", _load_stages)


def _relative(path: Path, run_dir: Path) -> str:
    """Paths in provenance blocks are relative to the run directory, so a moved run stays valid."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def stamp_inputs(inputs: Mapping[str, Path], run_dir: Path) -> dict[str, dict[str, str]]:
    """{role: {path, sha256}} of every input file; a missing input is a RunError naming it."""
    out: dict[str, dict[str, str]] = {}
    for role, path in inputs.items():
        path = Path(path)
        if not path.is_file():
            raise RunError(f"missing input file: {path}")
        out[role] = {"path": _relative(path, run_dir), "sha256": file_sha256(path)}
    return out


def identity_hash(stage: str, fmt: int, identity: Mapping[str, Any], stamped: Mapping[str, Mapping[str, str]]) -> str:
    """Full sha256 of the canonical JSON of (stage, format, identity, input hashes).

    Input paths are left out of the hash (a run directory may be moved or mounted elsewhere);
    their roles and contents are what count.
    """
    blob = {
        "stage": stage,
        "format": fmt,
        "identity": identity,
        "inputs": {role: s["sha256"] for role, s in sorted(stamped.items())},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class StageIdentity:
    """What an output depends on, resolved once per call: the identity, the stamped inputs, its hash."""

    stage: str
    format: int
    identity: dict[str, Any]
    inputs: dict[str, dict[str, str]]

    @property
    def hash(self) -> str:
        return identity_hash(self.stage, self.format, self.identity, self.inputs)

    def block(self) -> dict[str, Any]:
        """The ``provenance`` block written into the output's JSON document."""
        return {
            "stage": self.stage,
            "format": self.format,
            "identity_hash": self.hash,
            "identity": self.identity,
            "inputs": self.inputs,
        }


REPLACED_DIR = RunLayout.REPLACED
# Never moved aside: where earlier runs were moved to, and the log a batch worker is writing.
KEEP_IN_PLACE = (REPLACED_DIR, RunLayout.LOGS)


DECLARATIONS = ("name", "Config", "format", "role", "per", "after", "order", "report_input", "owns_dir",
                "moves_leftovers", "hint_options", "explainer_params")


class Stage:
    """Base class of every stage; subclasses set ``name``, ``Config``, ``format`` and implement
    ``inputs``, ``compute`` (and ``document``/``outputs``; ``identity`` where a field is recorded
    in a resolved form). :meth:`run` is final.

    Where a stage sits in a zoo's job graph is declared here too, so that the batch planner
    includes any registered stage without knowing it by name:

    * ``role``   the slot of the zoo's job graph it fills (default: its name). A zoo's
                 ``stages: {attack: my-attack}`` swaps in another registered stage of that role;
    * ``per``    ``"run"`` (one job per trained run), ``"explainer"`` (one per run x explainer)
                 or ``"report"`` (one per report, over many runs);
    * ``after``  the role whose output it consumes (``"train"``, ``"explain"``, ...);
    * ``order``  the scheduler runs later stages first, to finish whole runs early;
    * ``report_input``  whether reports wait for (and read) its output;
    * ``explainer_params``  (``per="explainer"``) the config field that takes a zoo explainer
                 entry's ``params`` (explain: ``params``); the zoo's settings of the stage are its
                 key of the slot's name, under a model or explainer entry's key of that name;
    * ``owns_dir``  the stage makes the run directory itself (train, import): a directory that
                 holds another config's run is refused without ``force`` and moved aside with it;
      ``moves_leftovers`` also moves an interrupted run's files aside (and says so).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    format: ClassVar[int] = 1
    role: ClassVar[str | None] = None
    per: ClassVar[str] = "run"
    after: ClassVar[str | None] = "train"
    order: ClassVar[float] = 1.5
    report_input: ClassVar[bool] = False
    owns_dir: ClassVar[bool] = False
    moves_leftovers: ClassVar[bool] = False
    hint_options: ClassVar[tuple[str, ...]] = ()  # config fields the recompute command names
    explainer_params: ClassVar[str | None] = None

    def __init_subclass__(cls, **declared: Any) -> None:
        """The declarations above as class keywords, one line a stage:
        ``class ExplainStage(Stage, name="explain", Config=ExplainConfig, per="explainer", ...)``."""
        super().__init_subclass__()
        unknown = sorted(set(declared) - set(DECLARATIONS))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown stage declaration(s) {', '.join(unknown)}; known: {', '.join(DECLARATIONS)}")
        for key, value in declared.items():
            setattr(cls, key, value)

    @classmethod
    def slot(cls) -> str:
        return cls.role or cls.name

    def inputs(self, run_dir: Path, conf: Any) -> dict[str, Path]:
        """The artefact files the output is computed from, by role (e.g. {"weights": ...})."""
        raise NotImplementedError

    def planned_inputs(self, run_dir: Path, conf: Any) -> dict[str, Path]:
        """Input files known before any of them exists, for the batch planner: a job that reads
        another job's output (by path, in this run or in another one) is ordered after it.
        Default none: ``after`` already orders a stage after the slot it consumes; a stage
        declares here only what ``after`` cannot say (e.g. the blur control's ``match`` run)."""
        return {}

    def identity(self, run_dir: Path, conf: Any) -> dict[str, Any]:
        """Everything besides the input files that determines the output: the config's fields
        (:func:`config_identity`); a stage overrides this only to record a field resolved."""
        return config_identity(conf)

    def document(self, run_dir: Path, conf: Any) -> Path:
        """The JSON document whose presence (and provenance) marks a complete output."""
        return self.outputs(run_dir, conf)[-1]

    def outputs(self, run_dir: Path, conf: Any) -> list[Path]:
        """The files written; the last is the JSON document whose presence marks completion."""
        return [self.document(run_dir, conf)]

    def hint(self, run_dir: Path, conf: Any) -> str:
        """The command that (re)computes this output, for error messages."""
        named = "".join(f" --{k.replace('_', '-')} {getattr(conf, k)}" for k in self.hint_options) if conf is not None else ""
        return f"xairobust {self.name} --run {run_dir}{named}"

    def compute(self, run_dir: Path, conf: Any, resolved: StageIdentity, quiet: bool) -> Written | None:
        """The stage's work. Returns the document to write (None: ``write`` was done here)."""
        raise NotImplementedError

    def preflight(self, run_dir: Path, conf: Any) -> None:
        """(``owns_dir`` stages) Checks that must pass before an old run is moved aside."""

    def occupied(self, run_dir: Path, conf: Any) -> str:
        """(``owns_dir`` stages) The error when ``run_dir`` holds another config's run."""
        return f"{self.name}: {run_dir} already holds a run with another config; choose another --out or pass --force"

    # -- shared behaviour ---------------------------------------------------------------------

    @final
    def run(self, run_dir: Path, conf: Any, quiet: bool = False, force: bool = False) -> Path:
        """Resolve, skip when current, else compute and write; returns the document's path."""
        run_dir = Path(run_dir)
        resolved = self.resolve(run_dir, conf)
        if self.is_current(run_dir, conf, resolved):
            return self.document(run_dir, conf)
        if self.owns_dir:
            self._claim(run_dir, conf, force)
        written = self.compute(run_dir, conf, resolved, quiet)
        if written is not None:
            write_document(self.document(run_dir, conf), written, resolved)
        return self.document(run_dir, conf)

    def _claim(self, run_dir: Path, conf: Any, force: bool) -> None:
        """Before an ``owns_dir`` stage writes: a directory holding another run is refused, or
        (``force``) moved aside with everything computed from it; so are an interrupted run's
        leftovers (``moves_leftovers``). A folder of a user's own files is refused."""
        import sys

        from xairobust.errors import ConfigError

        finished = self.document(run_dir, conf).is_file()
        if finished and not force:
            raise ConfigError(self._edited(run_dir, conf) or self.occupied(run_dir, conf))
        self.preflight(run_dir, conf)  # checks that must pass before anything is moved
        if not finished and not force:
            from xairobust.runs import RUN_ENTRIES
            from xairobust.validate import check_not_foreign

            check_not_foreign(run_dir, f"{self.name}: --out", force, known=RUN_ENTRIES)
        if finished or self.moves_leftovers:
            moved = move_aside(run_dir)
            if moved is not None and self.moves_leftovers:
                print(f"{self.name}: moved the previous contents of {run_dir} (and everything computed from them)"
                      f" to {moved}", file=sys.stderr)

    def _edited(self, run_dir: Path, conf: Any) -> str | None:
        """(``owns_dir`` stages) The error when the finished run's document was edited by hand
        (its config may be the same: say so, rather than 'another config')."""
        doc_path = self.document(run_dir, conf)
        try:
            why = changed_body(read_json(doc_path), doc_path)
        except RunError:
            return None
        if why is None:
            return None
        return f"{self.name}: {why}; recompute it with `{self.hint(run_dir, conf)}` (--force moves the old files aside)"

    def resolve(self, run_dir: Path, conf: Any) -> StageIdentity:
        run_dir = Path(run_dir)
        return StageIdentity(self.name, self.format, self.identity(run_dir, conf), stamp_inputs(self.inputs(run_dir, conf), run_dir))

    def is_current(self, run_dir: Path, conf: Any, resolved: StageIdentity | None = None) -> bool:
        return is_current(self.outputs(Path(run_dir), conf), resolved or self.resolve(Path(run_dir), conf),
                          accept=self.accepts)

    def accepts(self, doc: Mapping[str, Any], resolved: StageIdentity) -> bool:
        """Whether a document without a matching provenance block is still current (default
        never; train accepts runs written before provenance blocks by their config hash)."""
        return False


def write_document(path: Path, written: Written, resolved: StageIdentity) -> None:
    """The document with its provenance block (its files' sha256 and its own body's), written
    atomically, last."""
    doc = dict(written.doc)
    doc[PROVENANCE_KEY] = resolved.block()
    if written.files:
        doc[OUTPUTS_KEY] = stamp_outputs(path, *written.files)
    write_sealed(path, doc)


def canonical_json(obj: Any) -> bytes:
    """The one byte form a JSON value is hashed in: sorted keys, no whitespace, ASCII escapes,
    floats as ``json.dump`` writes them (``repr``: the shortest form that reads back exactly)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def body_sha256(doc: Mapping[str, Any]) -> str:
    """sha256 of the document's canonical JSON: every key and value, the provenance block and
    the ``outputs`` record included, except the ``provenance.body_sha256`` field itself.

    Hashed as the document reads back from disk (NaN/inf as null, tuples as lists, keys as
    strings: ``write_json_atomic``'s JSON parsed again), so the hash of what was written and of
    what :func:`~xairobust.runs.read_json` later returns are the same.
    """
    from xairobust.runs import json_safe

    body = dict(doc)
    block = body.get(PROVENANCE_KEY)
    if isinstance(block, Mapping):
        body[PROVENANCE_KEY] = {k: v for k, v in block.items() if k != BODY_KEY}
    plain = json.loads(json.dumps(json_safe(body), allow_nan=False))
    return hashlib.sha256(canonical_json(plain)).hexdigest()


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its body hash recorded in its provenance block (which it must have)."""
    block = doc.get(PROVENANCE_KEY)
    if not isinstance(block, dict):
        raise TypeError("seal: the document has no provenance block")
    doc = {**doc, PROVENANCE_KEY: {**block, BODY_KEY: None}}
    doc[PROVENANCE_KEY][BODY_KEY] = body_sha256(doc)
    return doc


def write_sealed(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Write a stage document (it has its provenance block) with its body hash, atomically: the
    one way every stage document reaches the disk, so that :func:`verify_chain` can check it.
    Returns the document as written (body hash included)."""
    from xairobust.runs import write_json_atomic

    sealed = seal(doc)
    write_json_atomic(path, sealed)
    return sealed


def changed_body(doc: Mapping[str, Any], doc_path: Path) -> str | None:
    """None when ``doc`` is as it was written (or predates body hashes), else why not (one phrase).

    A document written before body hashes were recorded has none: it is accepted as before (its
    inputs and output files are still checked), because a hash added now would vouch for whatever
    the file holds now; see docs/contributing.md.
    """
    block = doc.get(PROVENANCE_KEY)
    if not isinstance(block, Mapping) or BODY_KEY not in block:
        return None
    try:
        actual = body_sha256(doc)
    except RecursionError:  # parsed, but too deep to walk again (the tool never writes such a file)
        return f"{doc_path} cannot be checked (nested too deeply to read)"
    if block[BODY_KEY] != actual:
        return f"{doc_path} was changed after it was written (its content no longer has the sha256 recorded in it)"
    return None


def is_current(outputs: list[Path], resolved: StageIdentity, accept: Any = None) -> bool:
    """True when every output exists and the document's provenance matches ``resolved`` exactly.

    The one check every stage uses to skip work. A document without a provenance block (older
    format) is not current, so it is recomputed rather than trusted; nor is one whose own body
    (:data:`BODY_KEY`) or recorded output files (:data:`OUTPUTS_KEY`) were changed since it was written.
    """
    if not outputs or not all(Path(p).is_file() for p in outputs):
        return False
    try:
        doc = read_json(outputs[-1])
    except RunError:
        return False
    block = doc.get(PROVENANCE_KEY)
    if not (isinstance(block, dict) and block.get("identity_hash") == resolved.hash):
        return bool(accept is not None and accept(doc, resolved))
    return changed_body(doc, Path(outputs[-1])) is None and changed_output(doc, Path(outputs[-1])) is None


def stamp_outputs(doc_path: Path, *paths: Path) -> dict[str, str]:
    """{name relative to ``doc_path``'s folder: sha256} of files written beside the document.

    The writing stage records it under :data:`OUTPUTS_KEY` after writing the files and before
    the document; :func:`verify_chain` checks it on every read.
    """
    folder = Path(doc_path).resolve().parent
    out = {}
    for p in paths:
        rel = Path(p).resolve().relative_to(folder)  # beside the document, never elsewhere
        out[rel.as_posix()] = file_sha256(p)
    return out


def changed_output(doc: Mapping[str, Any], doc_path: Path) -> str | None:
    """None when every output file ``doc`` records is unchanged, else why not (one phrase naming the file)."""
    recorded = doc.get(OUTPUTS_KEY)
    if recorded is None:
        return None  # written before output hashes were recorded: its inputs are still checked
    if not isinstance(recorded, dict):
        return f"{doc_path}: its '{OUTPUTS_KEY}' record is malformed"
    folder = Path(doc_path).parent
    for name, sha in recorded.items():
        if not isinstance(name, str) or not isinstance(sha, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            return f"{doc_path}: its '{OUTPUTS_KEY}' record is malformed"
        path = folder / name
        if not path.is_file():
            return f"{path} (recorded in {doc_path}) no longer exists"
        if file_sha256(path) != sha:
            return f"{path} was changed after it was written (its sha256 is not the one {Path(doc_path).name} recorded)"
    return None


def verify_chain(doc_path: Path, run_dir: Path, hint: str, outputs: bool = True) -> dict[str, Any]:
    """The JSON document at ``doc_path``, after checking every recorded input still has its hash.

    Raises :class:`StaleError` naming the stale file, the input that changed and ``hint`` (the
    command that recomputes it). A document with no provenance block cannot be verified and is
    refused the same way. The document itself must be as it was written (:func:`changed_body`:
    a hand-edited value is refused, not reported). With ``outputs`` (default) the files the
    document records it wrote beside it must be unchanged too (:func:`changed_output`).
    """
    doc = read_json(doc_path)
    block = doc.get(PROVENANCE_KEY)
    if not isinstance(block, dict) or not isinstance(block.get("inputs"), dict):
        raise StaleError(f"{doc_path} records no provenance (older format); recompute it with `{hint}`")
    why = changed_body(doc, doc_path)  # first: every value below is read from the document
    if why is not None:
        raise StaleError(f"{why}; recompute it with `{hint}`")
    for role, entry in block["inputs"].items():
        try:
            path = Path(entry["path"])
            expected = entry["sha256"]
        except (TypeError, KeyError):
            raise StaleError(f"{doc_path}: malformed provenance entry '{role}'; recompute it with `{hint}`") from None
        if not path.is_absolute():
            path = Path(run_dir) / path
        if not path.is_file():
            raise StaleError(f"{doc_path} was computed from {path}, which no longer exists; recompute it with `{hint}`")
        if file_sha256(path) != expected:
            raise StaleError(f"{doc_path} is stale: {path} ({role}) changed since it was computed; recompute it with `{hint}`")
    why = changed_output(doc, doc_path) if outputs else None
    if why is not None:
        raise StaleError(f"{why}; recompute it with `{hint}`")
    return doc


def move_aside(run_dir: Path) -> Path | None:
    """Move everything in ``run_dir`` (but earlier moves and logs) into ``.replaced/<time>/``.

    Called before a run directory's weights are replaced, so that nothing computed from the old
    weights (robustness.json, attributions/, scores/, checkpoints/, batch markers) stays beside
    the new ones. Returns the folder the files went to, or None when there was nothing to move.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    entries = [p for p in run_dir.iterdir() if p.name not in KEEP_IN_PLACE]
    if not entries:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = run_dir / REPLACED_DIR / stamp
    k = 1
    while dest.exists():
        k += 1
        dest = run_dir / REPLACED_DIR / f"{stamp}-{k}"
    dest.mkdir(parents=True)
    for p in entries:
        os.replace(p, dest / p.name)
    return dest


def verify_artefact(
    doc_path: Path,
    run_dir: Path,
    hint: str,
    legacy: Mapping[str, tuple[str | None, Path]] | None = None,
) -> dict[str, Any]:
    """:func:`verify_chain`, accepting documents written before provenance blocks existed.

    ``legacy`` maps a role to (the sha256 an older document recorded for that input, the input
    file now), e.g. ``{"weights": (doc["run"]["weights_sha256"], run/model.safetensors)}``. An
    older document is accepted only when it recorded every one of them and each still matches;
    anything else is refused like a stale artefact, naming the file and ``hint``.
    """
    doc = read_json(doc_path)
    if isinstance(doc.get(PROVENANCE_KEY), dict) or not legacy:
        return verify_chain(doc_path, run_dir, hint)
    for role, (recorded, path) in legacy.items():
        if not recorded:
            raise StaleError(f"{doc_path} records no provenance (older format); recompute it with `{hint}`")
        if not Path(path).is_file():
            raise StaleError(f"{doc_path} was computed from {path}, which no longer exists; recompute it with `{hint}`")
        if file_sha256(path) != recorded:
            raise StaleError(f"{doc_path} is stale: {path} ({role}) changed since it was computed; recompute it with `{hint}`")
    return doc
