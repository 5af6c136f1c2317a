"""The scripts' code: each module has ``build_parser()`` and ``main(argv=None)``; CIFAR/ and ImageNet/ hold thin wrappers."""
