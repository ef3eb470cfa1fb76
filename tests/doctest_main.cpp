// The one translation unit that defines doctest's main (Debian's doctest has no doctest_with_main).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
