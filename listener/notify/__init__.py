"""Telling a row's owner that it finished: the words (texts.py), the messages and their
outcomes (messages.py) and the notifier that makes it happen once (notifier.py). The
statements live with Postgres (adapters/postgres/push_store.py), the sender with FCM
(adapters/fcm.py)."""
