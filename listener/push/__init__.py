"""Telling a row's owner that it finished: the words (texts.py), the messages and their
outcomes (messages.py), the statements that make it happen once (store.py), the notifier
that orchestrates (notifier.py) and the FCM sender (fcm.py, the only module here that
imports firebase-admin)."""
