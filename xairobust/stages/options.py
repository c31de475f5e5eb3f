"""The runtime options the computing stages share: where and how a stage computes, not what.

``device`` and ``channels_last`` never change a result (no identity); ``precision`` does unless
it is fp32 (``IF_SET``: a bf16 run is another result, an fp32 one keeps the hash it had before the
option existed). Declared once here, so explain, score, manipulate and visualize mean the same by
them and check them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xairobust.runtime import check_precision
from xairobust.stages.contract import IF_SET, not_identity


@dataclass
class RuntimeOptions:
    device: str = not_identity("auto")
    precision: str = field(default="fp32", metadata=IF_SET)  # fp32 | bf16 (autocast; xairobust.runtime)
    channels_last: bool = not_identity(True)  # 4-D image models in channels_last (speed only: same values)

    def check_runtime(self, where: str) -> None:
        check_precision(self.precision, where)
