"""Deciding what runs next (``queue``) and when an evaluation is reconciled (``workqueue``)."""
