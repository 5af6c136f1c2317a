"""Ticket-making systems on the training engine: IMP (CIFAR and ImageNet), retraining, PrAC, FreeTickets."""
