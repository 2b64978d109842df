"""Config models of the zoo's architectures: pure pydantic, no torch.

The API validates `arch.config` of a built-in architecture with these very models
before a job is queued, so a bad size costs an HTTP 422 and not a worker. Every
size has bounds: a width of 2**40 would only fail as an allocation in the worker,
a negative one as an internal error. The torch modules in `trajx.engine.zoo`
build from them.
"""

from importlib.metadata import entry_points
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trajx.errors import InvalidInput
from trajx.readable_errors import did_you_mean, readable_errors

# Where plug-in packages register architectures (read as metadata here: nothing is imported).
PLUGIN_GROUP = "trajx.architectures"

Activation = Literal["relu", "gelu", "tanh", "silu"]
MAX_WIDTH = 65_536
# A layer width (units, channels): scaled widths must land in the same range.
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
CONV8_CHANNELS = [64, 64, 128, 128, 256, 256, 512, 512]


class ArchConfig(BaseModel):
    """Base of every architecture config: unknown keys are refused, values are frozen and
    strictly typed (`"10"`, `10.0` and `true` are not integers)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def scaled(width: int, factor: float) -> int:
    """`width` times `factor`, rounded (configs check that the result is a valid width)."""
    return round(width * factor)


def _check_scaled(widths: dict[str, list[int]], factor: float) -> None:
    for field, values in widths.items():
        for i, value in enumerate(values):
            if not 1 <= scaled(value, factor) <= MAX_WIDTH:
                raise ValueError(f"width {factor:g} scales {field}[{i}]={value} to {scaled(value, factor)}, "
                                 f"outside 1..{MAX_WIDTH}")


class MLPConfig(ArchConfig):
    """Config of `mlp` (see docs/models.md)."""

    in_features: int = Field(ge=1, le=1_000_000)
    hidden: list[Width] = Field(min_length=1, max_length=64)
    num_classes: int = Field(ge=1, le=1_000_000)
    activation: Activation = "relu"
    norm: Literal["none", "layernorm", "batchnorm"] = "none"
    # Example inputs only: trace with images of this shape instead of flat vectors.
    input_shape: list[Width] | None = Field(default=None, min_length=1, max_length=3)

    @model_validator(mode="after")
    def _input_shape_holds_features(self) -> "MLPConfig":
        if self.input_shape is not None:
            features = 1
            for size in self.input_shape:
                features *= size
            if features != self.in_features:
                raise ValueError(f"input_shape {self.input_shape} does not hold in_features={self.in_features}")
        return self


class CNNConfig(ArchConfig):
    """Config of `cnn` (see docs/models.md); defaults give Conv8 for 32x32 RGB."""

    in_channels: int = Field(default=3, ge=1, le=4096)
    image_size: int = Field(default=32, ge=1, le=4096)
    num_classes: int = Field(default=10, ge=1, le=1_000_000)
    channels: list[Width] = Field(default_factory=lambda: list(CONV8_CHANNELS), min_length=1, max_length=64)
    fc: list[Width] = Field(default_factory=lambda: [256, 256], max_length=16)
    width: float = Field(default=1.0, gt=0, le=64)
    pool_every: int = Field(default=2, ge=1, le=64)
    batchnorm: bool = True
    pooling: Literal["flatten", "avgpool"] = "flatten"
    activation: Activation = "relu"

    @property
    def num_pools(self) -> int:
        return len(self.channels) // self.pool_every

    @model_validator(mode="after")
    def _shapes_fit(self) -> "CNNConfig":
        if self.image_size % 2**self.num_pools:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**{self.num_pools} "
                f"({self.num_pools} max-pools for {len(self.channels)} convs, pool_every={self.pool_every})"
            )
        _check_scaled({"channels": self.channels, "fc": self.fc}, self.width)
        return self


# resnet depth -> (blocks per stage, channels per stage)
RESNET_LAYOUTS = {20: ([3, 3, 3], [16, 32, 64]), 18: ([2, 2, 2, 2], [64, 128, 256, 512])}


class ResNetConfig(ArchConfig):
    """Config of `resnet` (see docs/models.md)."""

    depth: Literal[18, 20] = 20
    width: float = Field(default=1.0, gt=0, le=64)
    in_channels: int = Field(default=3, ge=1, le=4096)
    num_classes: int = Field(default=10, ge=1, le=1_000_000)
    image_size: int = Field(default=32, ge=8, le=4096)

    @model_validator(mode="after")
    def _widths_fit(self) -> "ResNetConfig":
        _check_scaled({"channels": RESNET_LAYOUTS[self.depth][1]}, self.width)
        return self


class TransformerConfig(ArchConfig):
    """Config of `transformer` (see docs/models.md)."""

    input: Literal["patches", "tokens"] = "patches"
    in_channels: int = Field(default=3, ge=1, le=4096)
    image_size: int = Field(default=32, ge=1, le=4096)
    patch_size: int = Field(default=4, ge=1, le=4096)
    d_in: int = Field(default=16, ge=1, le=1_000_000, description="token features (input='tokens')")
    seq_len: int = Field(default=16, ge=1, le=100_000, description="tokens (input='tokens')")
    d_model: Width = 64
    num_heads: int = Field(default=4, ge=1, le=1024)
    num_layers: int = Field(default=2, ge=1, le=128)
    mlp_ratio: float = Field(default=4.0, gt=0, le=64)
    pool: Literal["mean", "cls"] = "mean"
    attention: Literal["separate", "fused", "multihead"] = "separate"
    activation: Activation = "gelu"
    num_classes: int = Field(default=10, ge=1, le=1_000_000)

    @property
    def num_tokens(self) -> int:
        if self.input == "tokens":
            return self.seq_len
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_hidden(self) -> int:
        return scaled(self.d_model, self.mlp_ratio)

    @model_validator(mode="after")
    def _shapes_fit(self) -> "TransformerConfig":
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.input == "patches" and self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        _check_scaled({"d_model": [self.d_model]}, self.mlp_ratio)
        return self


# The built-in architectures; plug-ins (entry points) are only known where torch is.
class HFArchConfig(BaseModel):
    """The torch-free part of `hf`'s config (a Hugging Face `config.json` plus `task`): the
    API checks these two keys; the worker checks the rest against transformers
    (`trajx.engine.zoo.hf`), which the API never imports."""

    model_config = ConfigDict(extra="allow", frozen=True)

    task: Literal["causal-lm", "masked-lm", "sequence-classification", "image-classification",
                  "audio-classification"]
    model_type: str = Field(min_length=1, max_length=100)


ZOO_CONFIGS: dict[str, type[BaseModel]] = {
    "mlp": MLPConfig, "cnn": CNNConfig, "resnet": ResNetConfig, "transformer": TransformerConfig,
    "hf": HFArchConfig,
}


def validate_config(name: str, model: type[BaseModel], config: Any) -> BaseModel:
    """`config` validated by `model`; InvalidInput(code="invalid_config") naming each bad key."""
    if isinstance(config, model):
        return config
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        problems = readable_errors(exc, ("arch", "config"), model)
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidInput(f"invalid config for architecture {name!r}: {summary}", code="invalid_config",
                           field=problems[0]["field"], errors=problems) from None


def check_builtin_config(name: str, config: Any) -> None:
    """Validate `config` if `name` is a built-in architecture (others are checked by the
    worker). A name that is none of those nor a plug-in installed here, but close to one,
    is a typo: InvalidInput `unknown_architecture` with the name meant. (A name close to
    nothing may be a plug-in installed only where the workers run.)"""
    if name in ZOO_CONFIGS:
        validate_config(name, ZOO_CONFIGS[name], config)
        return
    known = {*ZOO_CONFIGS, *(point.name for point in entry_points(group=PLUGIN_GROUP))}
    hint = did_you_mean(name, known)
    if name not in known and hint:
        raise InvalidInput(f"unknown architecture {name!r}{hint}; built in: {', '.join(sorted(ZOO_CONFIGS))}",
                           code="unknown_architecture", field="arch.name")
