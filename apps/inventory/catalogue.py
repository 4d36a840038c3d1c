"""The demo catalogue ``make run`` seeds, so the platform has something to sell."""

from decimal import Decimal

DEMO_PRODUCTS = [
    ("KB-001", "Mechanical keyboard", Decimal("89.90"), 120),
    ("MS-002", "Wireless mouse", Decimal("34.50"), 300),
    ("MN-003", "27-inch monitor", Decimal("279.00"), 40),
    ("HD-004", "Noise-cancelling headphones", Decimal("199.95"), 75),
    ("CB-005", "USB-C cable, 2 m", Decimal("12.99"), 1000),
    ("DK-006", "Laptop docking station", Decimal("149.00"), 25),
    ("WC-007", "1080p webcam", Decimal("59.90"), 60),
    ("SS-008", "Portable SSD, 1 TB", Decimal("109.00"), 90),
    ("LS-009", "Laptop stand", Decimal("39.00"), 150),
    ("LM-010", "Limited-edition desk mat", Decimal("24.00"), 5),
]
