"""Demo data: users, a catalog, and a year of orders, generated deterministically."""

import random
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from domains.accounts.models import User
from domains.catalog.models import Category, Inventory, Product
from domains.orders.models import Order, OrderItem, OrderStatus, PaymentStatus

REGIONS = ("north", "south", "east", "west", "central")
CATEGORY_NAMES = (
    "Books",
    "Electronics",
    "Garden",
    "Kitchen",
    "Outdoors",
    "Toys",
    "Music",
    "Office",
    "Health",
    "Sports",
    "Beauty",
    "Pets",
)
DEMO_USER = ("demo@example.com", "demo-password")
DEMO_STAFF = ("admin@example.com", "admin-password")


def seed_demo(
    *,
    users: int,
    categories: int,
    products: int,
    orders: int,
    months: int,
    seed: int = 7,
    batch: int = 5_000,
    log=print,
) -> None:
    rng = random.Random(seed)
    with transaction.atomic():
        User.objects.create_superuser(
            DEMO_STAFF[0], DEMO_STAFF[1], first_name="Ada", last_name="Admin"
        )
        User.objects.create_user(DEMO_USER[0], DEMO_USER[1], first_name="Demo", last_name="User")
        password = make_password(None)  # unusable: generated customers do not log in
        User.objects.bulk_create(
            [
                User(
                    email=f"customer{i:05d}@example.com",
                    password=password,
                    first_name=f"Customer{i}",
                )
                for i in range(users)
            ],
            batch_size=batch,
        )
        customer_ids = list(User.objects.values_list("pk", flat=True))
        names = [
            CATEGORY_NAMES[i % len(CATEGORY_NAMES)] + ("" if i < len(CATEGORY_NAMES) else f" {i}")
            for i in range(categories)
        ]
        cats = Category.objects.bulk_create([Category(name=n, slug=slugify(n)) for n in names])
        catalog = Product.objects.bulk_create(
            [
                Product(
                    sku=f"SKU-{i:05d}",
                    name=f"Product {i}",
                    description=f"Demo product {i}",
                    price=Decimal(rng.randrange(199, 49_999)) / 100,
                    category=cats[i % len(cats)],
                )
                for i in range(products)
            ],
            batch_size=batch,
        )
        stock = random.Random(seed + 1)  # its own stream, so the orders stay as they were
        Inventory.objects.bulk_create(
            [Inventory(product=p, available=stock.randint(0, 500)) for p in catalog],
            batch_size=batch,
        )
        log(f"  {len(customer_ids)} users, {len(cats)} categories, {len(catalog)} products")
        now = timezone.now()
        span = timedelta(days=30 * months).total_seconds()
        statuses = [OrderStatus.CONFIRMED] * 18 + [OrderStatus.FAILED, OrderStatus.PENDING]
        for start in range(0, orders, batch):
            chunk = []
            lines = []
            for i in range(start, min(orders, start + batch)):
                status = rng.choice(statuses)
                order = Order(
                    number=f"SO-{i + 1:07d}",
                    customer_id=rng.choice(customer_ids),
                    status=status,
                    payment_status=PaymentStatus.PAID
                    if status == OrderStatus.CONFIRMED
                    else PaymentStatus.UNPAID,
                    currency="USD",
                    region=rng.choice(REGIONS),
                    created_at=now - timedelta(seconds=rng.random() * span),
                )
                items = [(p, rng.randint(1, 4)) for p in rng.sample(catalog, rng.randint(1, 3))]
                order.total_amount = sum(p.price * q for p, q in items)
                chunk.append(order)
                lines.append(items)
            Order.objects.bulk_create(chunk)
            OrderItem.objects.bulk_create(
                [
                    OrderItem(order=o, product=p, quantity=q, unit_price=p.price)
                    for o, items in zip(chunk, lines, strict=True)
                    for p, q in items
                ],
                batch_size=batch,
            )
            log(f"  orders {min(orders, start + batch)}/{orders}")
