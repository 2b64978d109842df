"""Local `.pt` → safetensors conversion: plain state dicts only, never executing a pickle."""

import pickle

import pytest
import torch
from safetensors.torch import load_file

from trajx.client.convert import convert_state_dict
from trajx.client.errors import InvalidLocalInput


class MarkerPayload:
    """A pickle that, if ever unpickled unsafely, creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_plain_state_dict_is_converted(tmp_path):
    state = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    # A view sharing storage: safetensors would refuse it without the copy.
    state["fc.weight_t"] = state["fc.weight"].t()
    torch.save(state, tmp_path / "model.pt")

    out, notes = convert_state_dict(tmp_path / "model.pt", tmp_path / "conv")

    assert out == tmp_path / "conv" / "model.safetensors" and notes == []
    loaded = load_file(out)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"fc.weight": MarkerPayload(marker)}, f, protocol=2)

    with pytest.raises(InvalidLocalInput, match="evil.pt: not a weights-only"):
        convert_state_dict(tmp_path / "evil.pt", tmp_path / "conv")
    assert not marker.exists()


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    # Guards the test above: its pickle is dangerous, so refusing it means something.
    pickle.loads(pickle.dumps(MarkerPayload(tmp_path / "ran"), protocol=2))
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("payload, message", [
    ([torch.zeros(2)], "got list"),
    ({"step": 3, "w": torch.zeros(2)}, "not tensors: 'step'"),
    ({}, "non-empty dict"),
])
def test_anything_but_a_flat_tensor_dict_is_refused(tmp_path, payload, message):
    torch.save(payload, tmp_path / "x.pth")
    with pytest.raises(InvalidLocalInput, match=message):
        convert_state_dict(tmp_path / "x.pth", tmp_path / "conv")
