"""The evaluation step's entry point, `run(ctx, EvaluateParams())`: every model version on T(0) and
every labelled T(i) (Table 1), what each fine-tuned version fixed and broke against its parent
there (the repair table), the ranking stability of each test set (Fig. 7) and the quality of
each selection strategy as a failure detector, all saved for the report.

`madmine evaluate`, a round's evaluate step and the demo all measure through here, so the report
after `madmine round` holds the same tables as after `madmine evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from madmine.errors import EvaluationError
from madmine.steps import reads, repair
from madmine.steps.context import StepContext
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.evaluation import quality as q
from madmine.steps.evaluation import srcc


@dataclass(frozen=True)
class EvaluateParams:
    quality: bool = True  # selection quality where labelled images were scored
    run_id: str | None = None  # the scoring run for selection quality; default the newest complete one
    tau: float | None = None  # a failure is a per-image mIoU below this; default [evaluate] tau
    top_n: int | None = None  # n of precision@n; default [evaluate] top_n
    srcc_reference: int | None = None  # rank the models on the first N images of a test set (Fig. 7: 40)
    srcc_k: str | None = None  # the k to compare with the reference: A..B or a list
    srcc_draws: int = 0  # mean SRCC over this many random k-subsets (0: the first k images)


@dataclass
class EvaluateResult:
    evaluation: ev.Evaluation
    paths: tuple[str, str]
    curves: list = field(default_factory=list)  # srcc.Curve per test set
    quality: list = field(default_factory=list)  # quality.StrategyQuality per strategy
    quality_skipped: str | None = None  # why selection quality was not measured
    repair: list = field(default_factory=list)  # repair-table rows: each fine-tuned version against its parent


def run(ctx: StepContext, params: EvaluateParams) -> EvaluateResult:
    try:
        ks = srcc.parse_ks(params.srcc_k) if params.srcc_k else None
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    if params.srcc_reference is not None and params.srcc_reference < 1:
        raise EvaluationError("--srcc-reference must be >= 1")
    evaluation = ev.evaluate(ctx.config, ctx.ws, show_progress=ctx.show_progress)
    result = EvaluateResult(evaluation, ev.save(ctx.ws, evaluation))
    tau = ctx.config.evaluate.tau if params.tau is None else params.tau
    result.repair = repair.from_image_rows(evaluation.image_table().to_pylist(), reads.models_table(ctx.ws), tau)
    repair.write(ctx.ws, result.repair, repair.EVALUATION_PART)
    result.curves = srcc.curves(evaluation.image_table(), params.srcc_reference, ks, params.srcc_draws,
                                ctx.config.evaluate.seed)
    if not params.quality:
        return result
    try:
        result.quality = q.selection_quality(ctx.config, ctx.ws, run_id=params.run_id, tau=params.tau, n=params.top_n)
    except EvaluationError as exc:
        result.quality_skipped = str(exc)
        return result
    if result.quality:
        q.save(ctx.ws, result.quality)
    else:
        result.quality_skipped = "no labelled image was scored yet"
    return result
