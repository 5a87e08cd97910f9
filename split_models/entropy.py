"""Bridge from compressai's EntropyBottleneck to the torch-free codec's tables."""

from __future__ import annotations

import numpy as np
from compressai.entropy_models import EntropyBottleneck

from shared.codecs.factorized import FactorizedTables


def export_tables(bottleneck: EntropyBottleneck) -> FactorizedTables:
    """The tables `update()` built, plus the medians, in the form the device codec reads.

    Call `bottleneck.update(force=True)` after training (the tables are stale otherwise).
    """
    if bottleneck._quantized_cdf.numel() == 0:
        raise ValueError("the EntropyBottleneck has no tables yet: call update(force=True) first")
    medians = bottleneck._get_medians().detach().reshape(-1)
    return FactorizedTables(
        quantized_cdf=bottleneck._quantized_cdf.detach().cpu().numpy().astype(np.int32),
        cdf_length=bottleneck._cdf_length.detach().cpu().numpy().astype(np.int32).reshape(-1),
        offset=bottleneck._offset.detach().cpu().numpy().astype(np.int32).reshape(-1),
        medians=medians.cpu().numpy().astype(np.float32),
        precision=int(bottleneck.entropy_coder_precision),
    )
