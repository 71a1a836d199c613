#ifndef KILN_CXXHASH_SHIM_H
#define KILN_CXXHASH_SHIM_H
/* Debian's libxxhash (libxxhash-dev): XXH64 for the router's ring and probe orders. */
#include <xxhash.h>
#endif
