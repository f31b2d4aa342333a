"""criadapt-runc: the native criadapt backend (runc/crun + conmon + CNI, own image store)."""

__version__ = "0.1.0.dev0"
