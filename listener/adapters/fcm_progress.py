"""Lock-screen updates as firebase-admin messages: Android data messages and iOS Live Activity updates.

Android gets a high-priority data message the app renders as an ongoing notification
(progress-style on Android 16), collapsing on the row's id. An iPhone gets an update of the
Live Activity it started: FCM HTTP v1 forwards `apns.live_activity_token` to APNs with the
`liveactivity` push type; Apple's `aps` holds `event` (update, or end at the row's end),
`content-state` (the app's ContentState) and `timestamp` (Unix seconds, newer wins). Middle
updates go at APNs priority 5, which Apple does not count against the activity's budget;
the end at 10, shown at once.
"""

from __future__ import annotations

import warnings

from firebase_admin import messaging

from listener.notify.messages import ProgressMessage

LIVE_ACTIVITY_PUSH_TYPE = "liveactivity"
PRIORITY_QUIET = "5"
PRIORITY_NOW = "10"


def to_fcm_progress_message(message: ProgressMessage) -> messaging.Message:
    """The firebase-admin message of one lock-screen update."""
    # As for the completion push: FCM registration tokens go as `token`, deprecated in 7.7.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if message.live_activity_token is not None:
            return _live_activity(message, message.live_activity_token)
        return _android(message)


def _android(message: ProgressMessage) -> messaging.Message:
    return messaging.Message(
        token=message.token,
        data=dict(message.data),
        android=messaging.AndroidConfig(priority="high", collapse_key=message.collapse_id),
    )


def _live_activity(message: ProgressMessage, live_activity_token: str) -> messaging.Message:
    aps = {
        "timestamp": message.timestamp,
        "event": "end" if message.ends else "update",
        "content-state": dict(message.content_state),
    }
    return messaging.Message(
        token=message.token,
        apns=messaging.APNSConfig(
            live_activity_token=live_activity_token,
            headers={
                "apns-push-type": LIVE_ACTIVITY_PUSH_TYPE,
                "apns-priority": PRIORITY_NOW if message.ends else PRIORITY_QUIET,
                "apns-collapse-id": message.collapse_id,
            },
            payload=messaging.APNSPayload(aps=messaging.Aps(custom_data=aps)),
        ),
    )
