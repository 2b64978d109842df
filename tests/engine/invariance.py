"""Shared check for spec tests: permuting with a spec must not move a model's outputs."""

import torch
from torch import nn

from trajx.engine.permutation.spec import PermutationSpec, apply_permutation


def assert_invariant(model: nn.Module, spec: PermutationSpec, x: torch.Tensor, seed: int = 0) -> None:
    """Permute every group at random, reload the model and compare outputs in float32."""
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        # non-trivial BatchNorm statistics, so a wrongly permuted buffer shows
        for key, value in state.items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                value.normal_()
        model.load_state_dict(state)
        reference = model(x)
        perm = spec.random(torch.Generator().manual_seed(seed))
        model.load_state_dict(apply_permutation(spec, perm, state))
        assert torch.allclose(model(x), reference, rtol=1e-4, atol=1e-5)
