"""The words of a lock-screen update, in the app's languages (Korean, and English beside it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from listener.core.milestones import Milestone, Stage
from listener.notify.texts import NotificationTexts, templates_from_env

PROGRESS_TYPE = "ai_model_progress"
_SAMPLE = {"model_name": "m", "progress": "50"}


@dataclass(frozen=True)
class ProgressWords:
    """One update's words: a title, and the line under it in Korean and in English."""

    title: str
    body: str
    body_en: str


@dataclass(frozen=True)
class ProgressTexts:
    """The templates of the middle updates and of a cancelled row; they take {model_name} and {progress}.

    A completed or failed row ends with the words of its completion push (NotificationTexts),
    so the lock screen and the notification say the same thing.
    """

    title: str = "AI 모델 생성 중"
    started_body: str = "'{model_name}' 모델 생성을 시작했습니다."
    started_body_en: str = "'{model_name}' is being created."
    generating_body: str = "'{model_name}' 모델 생성 중: {progress}%"
    generating_body_en: str = "'{model_name}' is {progress}% done."
    uploading_body: str = "'{model_name}' 모델을 저장하는 중입니다."
    uploading_body_en: str = "'{model_name}' is almost ready: saving it."
    cancelled_title: str = "AI 모델 생성 취소"
    cancelled_body: str = "'{model_name}' 모델 생성이 취소되었습니다."
    cancelled_body_en: str = "'{model_name}' was cancelled."

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProgressTexts:
        """The defaults, with the LISTENER_PROGRESS_TEXT_* overrides set; a bad one is a ConfigError."""
        return cls(**templates_from_env(cls, env, "LISTENER_PROGRESS_TEXT_", _SAMPLE))

    def render(
        self, milestone: Milestone, model_name: str, reason: str | None, ends: NotificationTexts
    ) -> ProgressWords:
        """The words of `milestone` for the row `model_name` (`reason`: why it failed)."""
        names = {"model_name": model_name, "progress": str(milestone.progress)}
        if milestone.stage in (Stage.COMPLETED, Stage.FAILED):
            words = ends.render(milestone.stage.value, model_name, reason)
            return ProgressWords(words.title, words.message, words.message_en)
        if milestone.stage is Stage.CANCELLED:
            title, body, body_en = self.cancelled_title, self.cancelled_body, self.cancelled_body_en
        elif milestone.stage is Stage.STARTED:
            title, body, body_en = self.title, self.started_body, self.started_body_en
        elif milestone.stage is Stage.UPLOADING:
            title, body, body_en = self.title, self.uploading_body, self.uploading_body_en
        else:
            title, body, body_en = self.title, self.generating_body, self.generating_body_en
        return ProgressWords(title.format_map(names), body.format_map(names), body_en.format_map(names))
