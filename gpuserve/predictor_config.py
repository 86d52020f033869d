"""`kserve.predictor_config.PredictorConfig`: where and how a transformer's default `predict`/`explain`
reach the remote predictor. Plain attributes (gpuserve code and older scripts set them), plus the short
names KServe 0.16 also answers to (`protocol`, `timeout`, `retries`, `use_ssl`)."""

from __future__ import annotations

from typing import Optional

PREDICTOR_PROTOCOLS = ("v1", "v2", "grpc-v2")


class PredictorConfig:
    def __init__(self, predictor_host: Optional[str], predictor_protocol: str = "v1", predictor_use_ssl: bool = False,
                 predictor_request_timeout_seconds: int = 600, predictor_request_retries: int = 0,
                 predictor_health_check: bool = False):
        self.predictor_host = predictor_host
        self.predictor_protocol = predictor_protocol
        self.predictor_use_ssl = predictor_use_ssl
        self.predictor_request_timeout_seconds = predictor_request_timeout_seconds
        self.predictor_request_retries = predictor_request_retries
        self.predictor_health_check = predictor_health_check

    @property
    def predictor_base_url(self) -> str:
        scheme = "https" if self.predictor_use_ssl else "http"
        return f"{scheme}://{self.predictor_host}"

    @property
    def protocol(self) -> str:
        return self.predictor_protocol

    @property
    def timeout(self) -> int:
        return self.predictor_request_timeout_seconds

    @property
    def retries(self) -> int:
        return self.predictor_request_retries

    @property
    def use_ssl(self) -> bool:
        return self.predictor_use_ssl

    def __repr__(self) -> str:
        return (f"PredictorConfig(predictor_host={self.predictor_host!r}, "
                f"predictor_protocol={self.predictor_protocol!r})")
