"""Former home of `LayerRecording`; it lives in `layerstore.tarsplit.recording` now (re-exported here)."""

from __future__ import annotations

from .tarsplit.recording import LayerRecording, can_record_in_worker

__all__ = ["LayerRecording", "can_record_in_worker"]
