"""The registered generator and its ``champion`` alias: who holds it, and whether a new run takes it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from anime_avatar.artifacts.generator import GENERATOR
from anime_avatar.core.errors import UserError, first_line
from anime_avatar.gan.model_file import load_generator
from anime_avatar.ops.model_files import ModelNotFound, chosen_model_file, logged_model_file, not_found

log = logging.getLogger(__name__)

CHAMPION = "champion"
# What a generator model logged before the pyfunc format (pickled, no artifacts/generator.pt) needs.
PICKLED = " (models logged before the pyfunc format were pickled: train again, `dvc repro -f train`)"


# What a run's FID was measured with, tagged by the evaluate stage: the faces it is against (its real statistics)
# and the number of generated samples (FID is biased by it). Runs evaluated before 2026-12-07 have only the faces
# of their training, in FID_TRAINING_FACES_TAG.
FID_FACES_TAG = "fid.faces"
FID_SAMPLES_TAG = "fid.n_samples"
FID_TRAINING_FACES_TAG = "data_version.faces"


@dataclass(frozen=True)
class Candidate:
    version: str
    run_id: str
    fid: float | None
    faces: str | None = None  # the version of the faces its FID was measured against (None: not recorded)
    n_samples: str | None = None  # how many generated samples its FID was measured on (None: not recorded)

    def comparable(self, other: Candidate) -> bool:
        """Whether the two FIDs were measured alike: against the same faces and on as many samples. Unknown
        counts as alike, as before these were recorded."""
        return not self.difference(other)

    def difference(self, other: Candidate) -> str:
        """How ``other``'s FID was measured otherwise, in words ('' when alike)."""
        if self.faces and other.faces and self.faces != other.faces:
            return f"was scored on other faces ({other.faces})"
        if self.n_samples and other.n_samples and self.n_samples != other.n_samples:
            return f"was scored on {other.n_samples} samples, not {self.n_samples}"
        return ""


@dataclass(frozen=True)
class Decision:
    promote: bool  # the alias moves, to ``target``
    reason: str
    new: Candidate
    previous: Candidate | None
    target: Candidate | None = None  # who takes the alias when promoting: the new version unless said otherwise

    @property
    def winner(self) -> Candidate:
        return self.target or self.new

    @property
    def outcome(self) -> str:
        """``promoted`` (the new version took the alias), ``named`` (with no champion yet, or one measured
        otherwise, an older, better version took it) or ``kept`` (the alias did not move)."""
        if not self.promote:
            return "kept"
        return "promoted" if self.winner == self.new else "named"

    def tags(self) -> dict[str, str]:
        tags = {
            "champion.decision": self.outcome,
            "champion.reason": self.reason,
            "champion.new_version": self.new.version,
        }
        if self.promote and self.winner != self.new:
            tags["champion.version"] = self.winner.version
        if self.previous:
            tags["champion.previous_version"] = self.previous.version
            tags["champion.previous_fid"] = f"{self.previous.fid}"
        return tags


def champion(client, model_name: str) -> Candidate | None:  # client: mlflow.MlflowClient
    """The version under the champion alias, with its run's FID; None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as err:
        if not_found(err):  # no such model, or alias: the one test that the model loaders use too
            return None
        # A store that does not answer is not "no champion": retrain would compare against the wrong model.
        raise UserError(f"cannot look up the champion of {model_name}: {first_line(err)}") from None
    return candidate(client, str(version.version), version.run_id)


def candidate(client, version: str, run_id: str) -> Candidate:
    """A registered version with its run's FID and the faces it was measured against; no FID when the run has
    none, or is gone (deleted and then `mlflow gc`)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return Candidate(version, run_id, None)
        raise
    return Candidate(version, run_id, run.data.metrics.get("fid"), *fid_measure(run.data.tags))


def fid_measure(tags: dict[str, str]) -> tuple[str | None, str | None]:
    """How a run's FID was measured, from its tags: the version of the faces it is against and the number of
    samples (None where not recorded)."""
    return tags.get(FID_FACES_TAG, tags.get(FID_TRAINING_FACES_TAG)), tags.get(FID_SAMPLES_TAG)


def version_of_run(client, model_name: str, run_id: str) -> Candidate:
    """The registered version that a training run produced."""
    versions = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    if not versions:
        raise UserError(f"run {run_id} registered no version of {model_name!r}: is tracking.register_model false?")
    newest = max(versions, key=lambda v: int(v.version))
    return candidate(client, str(newest.version), run_id)


def best_evaluated(client, model_name: str, like: Candidate | None = None) -> Candidate | None:
    """The registered version with the lowest FID (the newest of equals), among those whose FID compares with
    ``like``'s (measured against the same faces); None when none was evaluated."""
    found = (candidate(client, str(v.version), v.run_id) for v in client.search_model_versions(f"name='{model_name}'"))
    evaluated = [c for c in found if c.fid is not None and (like is None or like.comparable(c))]
    return min(evaluated, key=lambda c: (c.fid, -int(c.version))) if evaluated else None


def decide(new: Candidate, previous: Candidate | None, best: Candidate | None = None) -> Decision:
    """Promote when the new FID is strictly lower than the champion's. With no champion yet, or one whose FID was
    measured otherwise, the alias goes to ``best`` (the best version measured as the new one was, see
    :func:`best_evaluated`) when it beats the new version."""
    best_is_older = best is not None and best.version != new.version and new.comparable(best)
    if previous is None and best_is_older and (new.fid is None or best.fid < new.fid):
        new_fid = "no FID" if new.fid is None else f"FID {new.fid:.2f}"
        reason = (f"no {CHAMPION} yet: version {best.version} (FID {best.fid:.2f}) is the best evaluated version; "
                  f"the new version {new.version} has {new_fid}")  # fmt: skip
        return Decision(True, reason, new, previous, target=best)
    if new.fid is None:
        return Decision(False, f"version {new.version} has no FID (was the evaluate stage run?)", new, previous)
    if previous is None:
        return Decision(True, f"no {CHAMPION} yet: version {new.version} (FID {new.fid:.2f}) takes it", new, previous)
    if previous.version == new.version:
        return Decision(False, f"version {new.version} already is the {CHAMPION} (no new model)", new, previous)
    if previous.fid is None:
        return Decision(True, f"the {CHAMPION} (version {previous.version}) has no FID", new, previous)
    if difference := new.difference(previous):
        # Each FID is against its own faces' statistics (and biased by the sample count): the numbers do not
        # compare. The new version was measured as the pipeline measures now (retrain refreshes the data); the
        # best version measured alike takes the alias, and later runs compare with it.
        held = f"the {CHAMPION} (version {previous.version}, FID {previous.fid:.2f}) {difference}"
        if best_is_older and best.fid < new.fid:
            return Decision(True, f"{held}; of the versions measured as the new version {new.version} (FID "
                                  f"{new.fid:.2f}) was, version {best.version} (FID {best.fid:.2f}) is the best",
                            new, previous, target=best)  # fmt: skip
        return Decision(True, f"FID {new.fid:.2f}; {held}, so the version measured as the pipeline measures now "
                              "takes it", new, previous)  # fmt: skip
    if new.fid < previous.fid:
        return Decision(True, f"FID {new.fid:.2f} < {previous.fid:.2f} of version {previous.version}", new, previous)
    return Decision(False, f"FID {new.fid:.2f} >= {previous.fid:.2f} of version {previous.version}", new, previous)


def apply(client, model_name: str, decision: Decision) -> None:
    """Move the alias if promoted, and record the decision on the new run and its model version."""
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, decision.winner.version)
    tags = decision.tags()
    for key, value in tags.items():
        client.set_tag(decision.new.run_id, key, value)
    client.set_model_version_tag(model_name, decision.new.version, "champion.decision", tags["champion.decision"])
    if decision.new.fid is not None:
        client.set_model_version_tag(model_name, decision.new.version, "fid", f"{decision.new.fid:.4f}")
    log.info("%s: %s", tags["champion.decision"], decision.reason)


def name_first_champion(client, run_id: str, fid: float, faces: str | None = None,
                        n_samples: int | None = None) -> Decision | None:  # fmt: skip
    """After the evaluation of ``run_id`` (scored ``fid`` against ``faces`` on ``n_samples``): when the model it
    registered has no champion yet, the alias goes to the best version evaluated alike, as retrain would give it,
    so that ``models:/NAME@champion`` works after the first ``dvc repro``. None, and nothing changed, when there
    is a champion (only retrain moves it) or the run registered no version (``tracking.register_model: false``)."""
    versions = client.search_model_versions(f"run_id='{run_id}'")
    if not versions:
        return None
    model_name = max(versions, key=lambda v: int(v.version)).name
    if champion(client, model_name) is not None:
        return None
    new = version_of_run(client, model_name, run_id)
    # The score just made, whether or not the store has it yet.
    new = Candidate(new.version, run_id, fid, faces, None if n_samples is None else str(n_samples))
    decision = decide(new, None, best_evaluated(client, model_name, like=new))
    apply(client, model_name, decision)
    log.info("champion named (%s): models:/%s@%s", decision.reason, model_name, CHAMPION)
    return decision


def name_champion_of_recorded_run(run_file: Path, stage: str, fid: float, faces: str | None = None,
                                  n_samples: int | None = None) -> None:  # fmt: skip
    """:func:`name_first_champion` for the run recorded in ``run_file`` by ``stage``, on its tracking store; a
    store that does not answer is a warning: the alias is a convenience, the evaluation stands."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from anime_avatar.artifacts.run import read_run_file

    record = read_run_file(name=run_file, stage=stage)
    if record is None:
        return
    try:
        name_first_champion(MlflowClient(record.tracking_uri), record.run_id, fid, faces, n_samples)
    except (MlflowException, OSError, UserError) as err:  # UserError: champion() on a store that did not answer
        log.warning("no champion named: the tracking store did not answer (%s)", first_line(err))


def resolve_generator(model: str | None, model_name: str) -> nn.Module:
    """The generator to sample from: a file path or an MLflow model URI; by default the registered
    ``champion``, else models/generator.pt."""
    if model:
        examples = "models:/NAME@ALIAS, runs:/ID/generator"
        return load_generator(chosen_model_file(model, GENERATOR.name, "generator", "train", examples, PICKLED)).net
    uri = f"models:/{model_name}@{CHAMPION}"
    try:
        generator = load_generator(logged_model_file(uri, GENERATOR.name, "generator", "train", PICKLED)).net
        log.info("using %s", uri)
        return generator
    except ModelNotFound as err:
        log.info("no champion model registered (%s): using %s", first_line(err), GENERATOR)
    except UserError as err:  # registered, but not loadable here: other avatars than the registry names, said so
        log.warning("the champion could not be loaded (%s): using %s instead", first_line(err), GENERATOR)
    return load_generator(GENERATOR).net
