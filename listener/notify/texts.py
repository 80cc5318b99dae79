"""The words of the news a row's owner gets: the notification row and the push (no SDK here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from listener.errors import ConfigError

COMPLETE_TYPE = "ai_model_complete"
FAILED_TYPE = "ai_model_failed"


def templates_from_env(
    cls: type[Any], env: Mapping[str, str], prefix: str, sample: Mapping[str, str]
) -> dict[str, str]:
    """The fields of `cls` that `prefix`+FIELD overrides, each checked to format with `sample`'s names."""
    chosen: dict[str, str] = {}
    names = " and ".join(f"{{{name}}}" for name in sample)
    for field in fields(cls):
        name = f"{prefix}{field.name.upper()}"
        value = env.get(name)
        if value is None or field.name.startswith("unknown_reason"):
            continue
        if not value.strip():
            raise ConfigError(f"{name} is empty")
        try:
            value.format_map(dict(sample))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{name} is not a template of {names}: {exc}") from exc
        chosen[field.name] = value
    return chosen


@dataclass(frozen=True)
class Rendered:
    """One row's words."""

    type: str
    title: str
    message: str
    message_en: str


@dataclass(frozen=True)
class NotificationTexts:
    """The words of the notification row and the push; templates take {model_name} and {reason}."""

    complete_title: str = "AI 모델 생성 완료"
    complete_body: str = "'{model_name}' 모델이 성공적으로 생성되었습니다."
    complete_body_en: str = "'{model_name}' model has been successfully created."
    failed_title: str = "AI 모델 생성 실패"
    failed_body: str = "'{model_name}' 모델 생성에 실패했습니다: {reason}"
    failed_body_en: str = "'{model_name}' model could not be created: {reason}"
    unknown_reason: str = "알 수 없는 오류"
    unknown_reason_en: str = "unknown error"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotificationTexts:
        """The defaults, with the LISTENER_PUSH_* overrides that are set; a bad template is a ConfigError."""
        return cls(**templates_from_env(cls, env, "LISTENER_PUSH_", {"model_name": "m", "reason": "r"}))

    def render(self, outcome: str, model_name: str, reason: str | None) -> Rendered:
        """The title and messages for a row that ended with `outcome`."""
        if outcome == "completed":
            names = {"model_name": model_name, "reason": ""}
            return Rendered(
                COMPLETE_TYPE,
                self.complete_title.format_map(names),
                self.complete_body.format_map(names),
                self.complete_body_en.format_map(names),
            )
        ko = {"model_name": model_name, "reason": reason or self.unknown_reason}
        en = {"model_name": model_name, "reason": reason or self.unknown_reason_en}
        return Rendered(
            FAILED_TYPE,
            self.failed_title.format_map(ko),
            self.failed_body.format_map(ko),
            self.failed_body_en.format_map(en),
        )
