#ifndef KILN_CLINUX_SHIM_H
#define KILN_CLINUX_SHIM_H
/* Linux calls that Swift's Glibc module leaves out: epoll, eventfd, thread ids, allocator tuning. */
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/socket.h>

/* accept4 is declared only under _GNU_SOURCE, which would change fd_set for the other modules. */
extern int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
static inline int kiln_gettid(void) { return (int)syscall(SYS_gettid); }
/* glibc's M_MMAP_THRESHOLD and M_ARENA_MAX (macros): blocks of at least `mmap_threshold` bytes mapped on
   their own, at most `arenas` arenas. */
static inline void kiln_tune_allocator(int mmap_threshold, int arenas) {
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_ARENA_MAX, arenas);
}
#endif
