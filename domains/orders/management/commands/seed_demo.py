from django.core.management import BaseCommand

from domains.accounts.models import User
from domains.orders.demo import DEMO_STAFF, DEMO_USER, seed_demo


class Command(BaseCommand):
    help = "Load demo users, catalog and orders (skipped when --only-if-empty and data exists)."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=500)
        parser.add_argument("--categories", type=int, default=12)
        parser.add_argument("--products", type=int, default=400)
        parser.add_argument("--orders", type=int, default=50_000)
        parser.add_argument("--months", type=int, default=12)
        parser.add_argument("--only-if-empty", action="store_true")

    def handle(self, *args, **options):
        if options["only_if_empty"] and User.objects.filter(email=DEMO_USER[0]).exists():
            self.stdout.write("Demo data already loaded.")
            return
        self.stdout.write("Loading demo data…")
        seed_demo(
            users=options["users"],
            categories=options["categories"],
            products=options["products"],
            orders=options["orders"],
            months=options["months"],
            log=self.stdout.write,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data loaded. Log in as {DEMO_USER[0]} / {DEMO_USER[1]} or {DEMO_STAFF[0]} / {DEMO_STAFF[1]}."
            )
        )
