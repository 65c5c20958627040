"""The contract with the kernels package: the JSON `python -m kernels validate --json` prints.

The broker never imports ``kernels``; it validates this document instead (a test pins
it against the real command). Unknown extra fields are allowed: the kernels may add.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VALIDATE_SCHEMA = "hpc-broker/kernels-validate/1"


class KernelResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    kernel: Literal["gemm", "fft", "stream", "peak"]
    size: int = Field(ge=1)
    dtype: str
    threads: int = Field(ge=1)
    repeat: int = Field(ge=1)
    seconds_best: float = Field(ge=0)
    seconds_median: float = Field(ge=0)
    gflops_best: float | None = None
    gflops_median: float | None = None
    gbs_best: float | None = None
    gbs_median: float | None = None
    residual: float | None = None
    residual_ok: bool


class GpuReport(BaseModel):
    """One GPU of ``validate --gpu``: who it is and its results (gemm float64 and float32,
    stream, peak), each in the shape of the CPU ones."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0)
    name: str = ""
    uuid: str | None = None
    simulated: bool = False
    results: list[KernelResult] = Field(default_factory=list)

    def result(self, kernel: str, dtype: str | None = None) -> KernelResult | None:
        return next(
            (r for r in self.results if r.kernel == kernel and dtype in (None, r.dtype)), None
        )

    @property
    def label(self) -> str:
        """How a reason names this GPU: ``gpu1 (NVIDIA H200, GPU-1a2b3c4d)``."""
        who = ", ".join(x for x in (self.name, (self.uuid or "")[:12]) if x)
        return f"gpu{self.index} ({who})" if who else f"gpu{self.index}"


class KernelsReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_: Literal["hpc-broker/kernels-validate/1"] = Field(alias="schema")
    host: str
    cpu: str
    threads: int = Field(ge=1)
    versions: dict[str, object]
    started_at: str
    seconds: float = Field(ge=0)
    results: list[KernelResult] = Field(min_length=1)
    # ``validate --gpu``: every GPU the job could use (CUDA_VISIBLE_DEVICES).
    gpus: list[GpuReport] = Field(default_factory=list)

    def result(self, kernel: str) -> KernelResult | None:
        return next((r for r in self.results if r.kernel == kernel), None)
