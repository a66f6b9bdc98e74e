"""Typed records: one header (what was asked, on what, with which software) and exactly one payload.

A record is what every measurement, search and prediction produces and what reports read. The package:

- `identity`: `Identity`, the configuration key (resume skips on it, the report groups by it);
- `header`: the device, model and suite a record is for;
- `stats` and `parts`: typed statistics (`Stats`, `Percentiles`, `Interval`) and the parts several payloads share
  (`BuildInfo`, `EngineInfo`, `ParityCheck`, `MachineLoad`, `ErrorBand`);
- `payloads`, `service`, `sweep`: the payloads;
- `record`: `Record`, its JSON and its flat row; `codec`: typed parts to JSON and back; `migrate`: older schemas
  brought to the current one on read (one version map; files are never rewritten).

It imports nothing from the rest of mbbench: it is the bottom layer every other one reads and writes.
"""

from mbbench.records.codec import decode, encode, without_non_finite
from mbbench.records.header import ConfigChange, DeviceInfo, ModelInfo, SuiteInfo, portable_suite_path
from mbbench.records.identity import (COMPILE_ENGINE, ENGINE_SEPARATOR, LATER_FIELDS, MAX_STEM_CHARS, Identity)
from mbbench.records.migrate import SCHEMA_VERSION
from mbbench.records.parts import (Agreement, BuildInfo, EngineInfo, ErrorBand, LoadSnapshot, MachineLoad,
                                   ParityCheck)
from mbbench.records.payloads import (Comparison, Failure, MaxBatchSearch, PairedRounds, Prediction, Ratio,
                                      SidePasses, Throughput, Trial)
from mbbench.records.record import (KINDS, MEASUREMENTS, NO_NUMBER, PAYLOADS, STATUSES, Payload, Record, backend_of,
                                    now)
from mbbench.records.service import (KeptPoints, KeptRates, Latency, LatencyPoint, RatePoint, Serving, ServiceSetup,
                                     SloPoint, SloSummary)
from mbbench.records.stats import (CONFIDENCE, PERCENTILES, UNSTABLE_IQR, Interval, Percentiles, Stats, samples_beyond,
                                   samples_needed)
from mbbench.records.sweep import MeasuredSweep, RankCorrelation, SweepCandidate, SweepGrid, SweepWorkload

__all__ = ["Agreement", "BuildInfo", "COMPILE_ENGINE", "CONFIDENCE", "Comparison", "ConfigChange", "DeviceInfo",
           "ENGINE_SEPARATOR", "EngineInfo", "ErrorBand", "Failure", "Identity", "Interval", "KINDS", "KeptPoints",
           "KeptRates", "LATER_FIELDS", "Latency", "LatencyPoint", "LoadSnapshot", "MAX_STEM_CHARS", "MEASUREMENTS",
           "MachineLoad", "MaxBatchSearch", "MeasuredSweep", "ModelInfo", "NO_NUMBER", "PAYLOADS", "PERCENTILES",
           "PairedRounds", "ParityCheck", "Payload", "Percentiles", "Prediction", "RankCorrelation", "RatePoint",
           "Ratio", "Record", "SCHEMA_VERSION", "STATUSES", "Serving", "ServiceSetup", "SidePasses", "SloPoint",
           "SloSummary", "Stats", "SuiteInfo", "SweepCandidate", "SweepGrid", "SweepWorkload", "Throughput", "Trial",
           "UNSTABLE_IQR", "backend_of", "decode", "encode", "now", "portable_suite_path", "samples_beyond",
           "samples_needed", "without_non_finite"]
