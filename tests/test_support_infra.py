import sys


def test_path():
    print(sys.path[:4])
    import tests.support.ports  # noqa: F401
