"""Weak labelling (steps 3-4 of the method, docs/paper.md): raters score the target's predictions on the
round's candidates, and the lowest mean opinion scores become the next labelling set S.

storage (events, ratings table) lives in `store`, access in `tokens`, the web app in `app`,
agreement and cost in `agreement` and `ledger`, S in `selection`.
"""
