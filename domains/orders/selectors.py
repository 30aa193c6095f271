from django.db.models import QuerySet

from domains.accounts.models import User
from domains.errors import NotFound
from domains.orders.models import Order


def order_list(*, viewer: User) -> QuerySet[Order]:
    """The viewer's own orders; staff see all."""
    if not viewer.is_authenticated:
        return Order.objects.none()
    if viewer.is_staff:
        return Order.objects.all()
    return Order.objects.filter(customer=viewer)


def order_get(*, viewer: User, order_id: int, field: str = "id") -> Order:
    """One of the viewer's orders; NotFound for anyone else's (the two look alike)."""
    order = order_list(viewer=viewer).filter(pk=order_id).first()
    if order is None:
        raise NotFound("No such order.", field=field)
    return order
