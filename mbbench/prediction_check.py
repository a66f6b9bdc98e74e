"""A GPU session's measurements against the predictions committed before it ran, so that the first records on a
lent GPU also measure the model (issue 35).

The session (scripts/gpu_run.py) times throughput of configurations whose predictions sit committed under
results/<gpu>/ (made by `scripts/predictions.sh`, never by hand). Each measured throughput record is matched to
the predicted record of the same configuration on the same GPU: everything in the identity but how it was produced
(measurement, passes, warmup, device index). The check says how far the measurement fell from the point and whether
it fell inside the committed band.
"""

from __future__ import annotations

from dataclasses import dataclass

from mbbench.records import Identity, Prediction, Record, Throughput


def comparable(identity: Identity) -> tuple:
    """What a measurement and a prediction share when they describe the same configuration on the same GPU."""
    return (identity.model, identity.suite_fingerprint, identity.protocol, identity.backend, identity.dtype,
            identity.device, identity.batch_size, identity.token_budget, identity.documents, identity.tiny,
            identity.weights_sha256, identity.engine, identity.time_transfer, identity.matmul_precision)


@dataclass(frozen=True)
class PredictionCheck:
    """One measured throughput and the committed prediction of its configuration (None when there is none)."""

    model: str
    suite: str
    gpu: str
    dtype: str
    documents: int | None
    measured: float  # tokens/s
    predicted: float | None  # tokens/s
    band: tuple[float, float] | None  # tokens/s the committed band gives; None: none, or too thin
    predicted_at: str | None  # when the prediction was made (its record's created_at)

    @property
    def error(self) -> float | None:
        """predicted / measured − 1, or None without a prediction."""
        return None if self.predicted is None else self.predicted / self.measured - 1.0

    @property
    def inside(self) -> bool | None:
        """Whether the measurement fell inside the committed band (None without one)."""
        return None if self.band is None else self.band[0] <= self.measured <= self.band[1]

    def line(self) -> str:
        """One line for a person: 'modernbert-base / short-fixed on H100-SXM: measured 812,000, predicted ...'."""
        head = f"{self.model} / {self.suite} on {self.gpu} ({self.dtype}, {self.documents} docs): " \
               f"measured {self.measured:,.0f} tokens/s"
        if self.predicted is None:
            return f"{head}; no committed prediction of this configuration"
        band = "no band" if self.band is None else \
            f"band {self.band[0]:,.0f}-{self.band[1]:,.0f}, {'inside' if self.inside else 'OUTSIDE'}"
        return f"{head}, predicted {self.predicted:,.0f} ({self.error:+.1%}; {band}; predicted {self.predicted_at})"


def check(measured: list[Record], predicted: list[Record]) -> list[PredictionCheck]:
    """Every ok measured throughput record of `measured` against the newest ok predicted record of `predicted` with
    the same configuration (`comparable`)."""
    predictions: dict[tuple, Record] = {}
    for record in sorted(predicted, key=lambda r: r.created_at):
        if record.kind == "predicted" and record.status == "ok" and isinstance(record.payload, Prediction):
            predictions[comparable(record.identity)] = record
    checks = []
    for record in measured:
        if record.kind != "measured" or record.status != "ok" or not isinstance(record.payload, Throughput):
            continue
        ident, match = record.identity, predictions.get(comparable(record.identity))
        payload = match.payload if match else None
        checks.append(PredictionCheck(ident.model, ident.suite, ident.device, ident.dtype, ident.documents,
                                      record.payload.tokens_per_second,
                                      payload.tokens_per_second if payload else None,
                                      payload.tokens_per_second_range if payload else None,
                                      match.created_at if match else None))
    return checks
