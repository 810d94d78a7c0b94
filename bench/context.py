"""What every benchmark receives from the runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchContext:
    #: scratch space for this benchmark (removed by the runner afterwards)
    workdir: Path
    #: fewer rounds and smaller inputs: a smoke run of the benchmark code, not a measurement
    quick: bool = False

    def rounds(self, full: int, quick: int = 1) -> int:
        return quick if self.quick else full
