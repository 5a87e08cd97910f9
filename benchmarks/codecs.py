"""Latent codec figures: which entropy coder, at what speed, how close to the ideal size.

    python -m benchmarks.codecs [--channels 24 --height 60 --width 80 --repeats 20]

Fits a real compressai EntropyBottleneck to a trained-looking latent distribution (per-channel
Laplace scales, offset medians, a few outliers), exports its tables, then on one latent of that
distribution measures, in one run on this machine:
  - our ANS bitstream through constriction (Rust) and through the pure-Python coder the
    aarch64 devices use (same words), vs compressai's C++ rANS (same tables),
  - zstd on uint8 (affine) and fp16,
  encode/decode ms per frame and MB/s of symbols, and bytes vs the ideal (information content
  of the symbols under the prior), as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck

from shared.codecs import FactorizedAnsCodec, Fp16ZstdCodec, Uint8ZstdCodec
from split_models.entropy import export_tables


def fit_bottleneck(channels: int, steps: int, seed: int) -> tuple[EntropyBottleneck, torch.Tensor]:
    torch.manual_seed(seed)
    scales = torch.exp(torch.linspace(np.log(0.4), np.log(8.0), channels)).view(1, -1, 1, 1)
    shift = torch.linspace(-1.0, 1.0, channels).view(1, -1, 1, 1)
    bottleneck = EntropyBottleneck(channels)
    # As in compressai's training scripts: the density and the quantiles (aux loss) get separate
    # optimizers; the quantiles a fast one, so the tables reach the tails in a few hundred steps.
    density = [p for n, p in bottleneck.named_parameters() if not n.endswith("quantiles")]
    optimizer = torch.optim.Adam(density, lr=1e-2)
    aux_optimizer = torch.optim.Adam([bottleneck.quantiles], lr=1.0)
    for _ in range(steps):
        sample = (
            torch.distributions.Laplace(0.0, 1.0).sample((8, channels, 16, 16)) * scales + shift
        )
        _, likelihoods = bottleneck(sample)
        loss = -torch.log2(likelihoods).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        aux_optimizer.zero_grad()
        bottleneck.loss().backward()
        aux_optimizer.step()
    bottleneck.update(force=True)
    return bottleneck.eval(), torch.cat([scales, shift], dim=0)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall ms over `repeats` runs after one warm-up, and the last result."""
    result = fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=24)
    parser.add_argument("--height", type=int, default=60)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--outlier-share", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    bottleneck, params = fit_bottleneck(args.channels, args.fit_steps, seed=0)
    scales, shift = params[0:1], params[1:2]
    shape = (1, args.channels, args.height, args.width)
    generator = torch.Generator().manual_seed(1)
    latent_t = torch.distributions.Laplace(0.0, 1.0).sample(shape) * scales + shift
    mask = torch.rand(shape, generator=generator) < args.outlier_share
    latent_t[mask] = 200.0  # activations a trained encoder occasionally produces
    latent = latent_t.numpy()[0]

    tables = export_tables(bottleneck)
    ans = FactorizedAnsCodec(tables, backend="constriction")
    python_ans = FactorizedAnsCodec(tables, backend="python")
    symbols = ans.quantize(latent)
    n_symbols = symbols.size
    symbol_mb = n_symbols * 4 / 1e6  # int32 symbols, the coder's input

    # The ideal: information content of each symbol's table index under its channel's pmf.
    pmfs = tables.pmfs()
    index = symbols.reshape(args.channels, -1) - tables.offset[:, None]
    ideal_bits = 0.0
    escapes = 0
    for c, pmf in enumerate(pmfs):
        idx = index[c]
        overflow = (idx < 0) | (idx >= len(pmf) - 1)
        escapes += int(overflow.sum())
        idx = np.where(overflow, len(pmf) - 1, idx)
        ideal_bits += float(-np.log2(pmf[idx]).sum())
    ideal_bytes = ideal_bits / 8

    results: dict[str, dict[str, float]] = {}

    def record(name: str, enc_ms: float, dec_ms: float, nbytes: int) -> None:
        results[name] = {
            "bytes": nbytes,
            "encode_ms": round(enc_ms, 3),
            "decode_ms": round(dec_ms, 3),
            "encode_MBps_symbols": round(symbol_mb / (enc_ms / 1e3), 1),
            "decode_MBps_symbols": round(symbol_mb / (dec_ms / 1e3), 1),
            "overhead_vs_ideal_pct": round((nbytes / ideal_bytes - 1) * 100, 2),
        }

    # constriction: symbols in, words out (quantization timed separately below).
    enc_ms, payload = timed(lambda: ans.encode_symbols(symbols), args.repeats)
    dec_ms, decoded = timed(lambda: ans.decode_symbols(payload), args.repeats)
    assert np.array_equal(decoded, symbols)
    record("constriction_ans", enc_ms, dec_ms, payload.nbytes)
    enc_ms, python_payload = timed(lambda: python_ans.encode_symbols(symbols), args.repeats)
    dec_ms, decoded = timed(lambda: python_ans.decode_symbols(python_payload), args.repeats)
    assert np.array_equal(decoded, symbols) and python_payload.strings == payload.strings
    record("python_ans", enc_ms, dec_ms, python_payload.nbytes)

    # compressai's C++ rANS with the same tables; lists built once (its API takes Python lists).
    cdfs = tables.quantized_cdf.tolist()
    lengths = tables.cdf_length.tolist()
    offsets = tables.offset.tolist()
    symbol_list = symbols.reshape(-1).tolist()
    index_list = np.repeat(np.arange(args.channels), args.height * args.width).tolist()
    encoder, decoder = RansEncoder(), RansDecoder()
    enc_ms, rans_bytes = timed(
        lambda: encoder.encode_with_indexes(symbol_list, index_list, cdfs, lengths, offsets),
        args.repeats,
    )
    dec_ms, rans_decoded = timed(
        lambda: decoder.decode_with_indexes(rans_bytes, index_list, cdfs, lengths, offsets),
        args.repeats,
    )
    assert rans_decoded == symbol_list
    record("compressai_rans", enc_ms, dec_ms, len(rans_bytes))
    # ... and as compressai's own compress()/decompress() run it, tensors to lists every call.
    enc_ms, strings = timed(lambda: bottleneck.compress(latent_t), args.repeats)
    dec_ms, _ = timed(lambda: bottleneck.decompress(strings, shape[-2:]), args.repeats)
    record("compressai_entropy_bottleneck_api", enc_ms, dec_ms, len(strings[0]))

    for name, codec in (("uint8_zstd", Uint8ZstdCodec()), ("fp16_zstd", Fp16ZstdCodec())):
        enc_ms, coded = timed(lambda codec=codec: codec.encode(latent), args.repeats)
        dec_ms, _ = timed(lambda codec=codec, coded=coded: codec.decode(coded), args.repeats)
        record(name, enc_ms, dec_ms, coded.nbytes)

    quantize_ms, _ = timed(lambda: ans.quantize(latent), args.repeats)
    print(
        json.dumps(
            {
                "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1},
                "latent_shape": list(shape[1:]),
                "symbols": n_symbols,
                "escaped_symbols": escapes,
                "ideal_bytes": round(ideal_bytes, 1),
                "raw_float32_bytes": latent.nbytes,
                "quantize_ms": round(quantize_ms, 3),
                "coders": results,
                "constriction_speedup_vs_compressai_rans": {
                    "encode": round(
                        results["compressai_rans"]["encode_ms"]
                        / results["constriction_ans"]["encode_ms"],
                        2,
                    ),
                    "decode": round(
                        results["compressai_rans"]["decode_ms"]
                        / results["constriction_ans"]["decode_ms"],
                        2,
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
