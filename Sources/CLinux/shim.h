#ifndef KILN_CLINUX_SHIM_H
#define KILN_CLINUX_SHIM_H
/* Linux calls that Swift's Glibc module leaves out: epoll, eventfd, thread ids. */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/socket.h>

/* accept4 is declared only under _GNU_SOURCE, which would change fd_set for the other modules. */
extern int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
static inline int kiln_gettid(void) { return (int)syscall(SYS_gettid); }
#endif
