// hiredis, Redis's own C client (Debian's libhiredis-dev): the protocol is not written by hand here.
#include <hiredis/hiredis.h>
