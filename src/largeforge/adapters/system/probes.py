"""What `largeforge doctor` reports about the host: device, matmul peak, default model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceStatus:
    """The device training and serving would use, and its measured matmul peak."""

    kind: str
    name: str
    dtype_name: str
    peak_gflops: float


@dataclass(frozen=True)
class DefaultModelStatus:
    """Where the embedded default model is: its packaged GGUF file and converted directory."""

    name: str
    gguf: str | None
    install_hint: str
    converted_dir: str
    converted: bool


class HostProbe:
    """Probes the host with the same code training and serving use (torch imported lazily)."""

    def device(self) -> DeviceStatus:
        """The detected device; raises whatever torch raises when it is missing or broken."""
        from largeforge.adapters.system.device import detect_device
        from largeforge.adapters.system.peak import matmul_peak

        info = detect_device()
        peak = matmul_peak(info, info.dtype_name)
        return DeviceStatus(info.kind, info.name, info.dtype_name, peak)

    def default_model(self) -> DefaultModelStatus:
        from largeforge.adapters.models.resolver import ALIASES, DEFAULT_MODEL, largeforge_home

        spec = ALIASES[DEFAULT_MODEL]
        gguf = spec.locate()
        converted = largeforge_home() / "models" / DEFAULT_MODEL
        return DefaultModelStatus(
            name=DEFAULT_MODEL,
            gguf=None if gguf is None else gguf.name,
            install_hint=spec.install_hint,
            converted_dir=str(converted),
            converted=(converted / "config.json").is_file(),
        )
