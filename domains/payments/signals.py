"""What payments tell the other domains, which connect their receivers in AppConfig.ready.

Payments writes payment state only; a domain whose rows follow a payment (an order's
payment status) writes them itself, in its receiver.
"""

from django.dispatch import Signal

# Sent with `payment` (its new status set) inside the transaction that recorded its
# charge or refund, with the order's row lock held: a receiver's writes commit with it.
payment_settled = Signal()
