"""conformance_adapter.py: the adapter of one implementation (here the loss of
``reference``, standing in for your package), complete and runnable:

    python -m pytest --pyargs conformance.checks \
        --stepoutputloss-impl myproj.conformance_adapter:make_adapter
"""

from conformance.adapter import AdapterBase, Capability, LossResult, LossSpec
from reference.corrector.loss import (
    CorrectorLossConfig,
    CorrectorRegularizationConfig,
    PreCorrectorOptimizationConfig,
    build_step_output_loss,
)
from reference.loss_config import LossConfig, StepLossConfig
from reference.normalizer import StandardNormalizer
from reference.step_output import StepOutput


class MyLoss:
    """One built loss object behind the suite's ``LossUnderTest``."""

    def __init__(self, loss):
        self.loss = loss

    @property
    def needs_uncorrected_grad(self) -> bool:
        return self.loss.needs_uncorrected_grad

    def __call__(self, output, uncorrected, target, step, data_mask=None) -> LossResult:
        # the suite's tensors go in as they are: physical units, no copies
        result = self.loss(StepOutput(output=output, uncorrected=uncorrected), target, step)
        return LossResult(
            main_per_channel=dict(zip(result.main.names, result.main.per_channel)),
            main_total=result.main.total(),
            regularization=result.regularization,
            total=result.total(),
        )


class MyAdapter(AdapterBase):
    name, version = "myproj", "1.0.0"
    # only what you support; a check of an undeclared capability is reported
    # as "deviates", "not exercised" or "not applicable" (see below)
    capabilities = frozenset(
        {Capability.EXCLUSION_MATCHER, Capability.WARN_ONCE_UNMATCHED, Capability.ENSEMBLE}
    )

    def build_loss(self, spec: LossSpec) -> MyLoss:
        step_loss = StepLossConfig(
            type=spec.main.loss_type,
            weights=dict(spec.main.weights),
            sqrt_loss_step_decay_constant=spec.main.sqrt_loss_step_decay_constant,
        ).build(spec.names, StandardNormalizer(spec.normalizer.means, spec.normalizer.stds))
        config = None
        if spec.precorrector is not None or spec.regularization is not None:
            pre, reg = spec.precorrector, spec.regularization
            config = CorrectorLossConfig(
                precorrector_optimization=None
                if pre is None
                else PreCorrectorOptimizationConfig(list(pre.exclude_names_and_prefixes)),
                regularization=None
                if reg is None
                else CorrectorRegularizationConfig(
                    loss=LossConfig(type=reg.loss_type), weight=reg.weight
                ),
            )
        return MyLoss(build_step_output_loss(config, step_loss, spec.n_ensemble))


def make_adapter() -> MyAdapter:
    return MyAdapter()
