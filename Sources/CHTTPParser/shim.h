// Node's http_parser (Debian's libhttp-parser-dev): HTTP/1.1 requests are not parsed by hand here.
#include <http_parser.h>
