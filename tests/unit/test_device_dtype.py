"""`auto` picks bf16 on a CPU only where it has bf16 instructions, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from largeforge.adapters.system.device import cpu_dtype, cpu_flags, detect_device, resolve_dtype

AMX = "fpu sse2 avx2 avx512f avx512bw amx_tile amx_bf16 amx_int8"
AVX512_BF16 = "fpu sse2 avx2 avx512f avx512bw avx512_bf16"
AVX512 = "fpu sse2 avx2 avx512f avx512bw avx512_vnni"
AVX2 = "fpu sse2 avx avx2 fma"


@pytest.mark.parametrize(
    ("flags", "dtype", "named"),
    [
        (AMX, "bfloat16", "amx_bf16"),
        (AVX512_BF16, "bfloat16", "avx512_bf16"),
        (AVX512, "float32", "no bf16 instructions"),
        (AVX2, "float32", "no bf16 instructions"),
        ("", "float32", "no bf16 instructions"),
    ],
)
def test_the_cpu_dtype_follows_its_bf16_instructions(flags: str, dtype: str, named: str) -> None:
    chosen, reason = cpu_dtype(flags.split())
    assert chosen == dtype
    assert named in reason
    device = detect_device("cpu", flags=flags.split())
    assert (device.dtype_name, device.dtype_reason) == (chosen, reason)
    assert device.cpu_bf16 is (dtype == "bfloat16")
    assert resolve_dtype("auto", device) == dtype


def test_an_explicit_dtype_wins_over_the_cpu(tmp_path: Path) -> None:
    device = detect_device("cpu", flags=AMX.split())
    assert resolve_dtype("float32", device) == "float32"
    assert resolve_dtype("fp32", device) == "float32"
    assert resolve_dtype("bf16", detect_device("cpu", flags=AVX2.split())) == "bfloat16"
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", device)


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Xeon\nflags\t\t: {AMX}\nbugs\t\t: none\n")
    assert {"amx_bf16", "avx512f"} <= cpu_flags(info)
    assert "none" not in cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == frozenset()
