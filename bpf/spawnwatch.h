/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The event layout shared by the BPF programs and spawnwatch's decoder
 * (src/spawnwatch/probe/layout.py mirrors it; a root test compares the
 * offset and size of every field as bcc computes them with the decoder's).
 *
 * Every event opens with struct sw_header: type, size, time first, so the
 * reader can dispatch and skip without knowing the rest.
 */
#ifndef SPAWNWATCH_H
#define SPAWNWATCH_H

#define SW_COMM_LEN 16
#define SW_FILENAME_LEN 256
/* argv capture: at most SW_ARGV_MAX_ARGS arguments and SW_ARGV_BYTES bytes in
 * all; one argument is read with at most SW_ARG_MAX_BYTES so the verifier can
 * bound every write.  Anything cut sets SW_FLAG_ARGV_TRUNCATED. */
#define SW_ARGV_MAX_ARGS 32
#define SW_ARGV_BYTES 4096
#define SW_ARG_MAX_BYTES 512

/* Bounds of the kernel-side tables (slot arrays: collisions are detected by
 * tag and reported as missing data, never as wrong data).  The loader may set
 * the dead slots and the ring's size (-D) for hosts with huge fork storms. */
#define SW_EXEC_SLOTS 1024  /* execs in flight at once, and held ones (births.h) */
#ifndef SW_DEAD_SLOTS
#define SW_DEAD_SLOTS 65536 /* zombies awaiting reap at once */
#endif
/* Forks held back until the process does something a record must say (see
 * births.h): a slot per pid modulo this; a collision flushes the occupant. */
#ifndef SW_BIRTH_SLOTS
#define SW_BIRTH_SLOTS 8192
#endif
/* Short lives tallied per spawner (tallies.h): slots per CPU, a spawner's slot
 * its pid modulo this; a collision flushes the occupant. */
#ifndef SW_TALLY_SLOTS
#define SW_TALLY_SLOTS 256
#endif
/* The loader gives the CPUs a host may have (each has its own tally slots); a
 * CPU beyond them sends BRIEF records instead. */
#ifndef SW_NR_CPUS
#define SW_NR_CPUS 1
#endif
/* How old user space lets a held fork grow before its sweep announces it
 * (births.py's HOLD_S; the loader gives it). */
#ifndef SW_HOLD_NS
#define SW_HOLD_NS 250000000ULL
#endif
#define SW_NS_PER_S 1000000000ULL
/* Command lines whose argv user space has, by hash (tallies.h); a slot per
 * hash modulo this. */
#define SW_ARGV_TOLD_SLOTS 1024
/* The key of sw_argv_hash, random per session (the loader gives it), so no
 * local user can choose a command line that hashes as another's. */
#ifndef SW_ARGV_HASH_KEY
#define SW_ARGV_HASH_KEY 0x9e3779b97f4a7c15ULL
#endif
#ifndef SW_RINGBUF_PAGES
#define SW_RINGBUF_PAGES 4096 /* 16 MiB with 4 KiB pages; a power of two */
#endif
/* Events are submitted without waking the reader, which drains the ring on a
 * short timer: a wakeup costs ~25 us per event here, a timed drain ~0.5 us.
 * The ring holds seconds of the heaviest fork storm, so a timer never loses. */
#define SW_SUBMIT_FLAGS BPF_RB_NO_WAKEUP

enum sw_event_type {
	SW_EVENT_FORK = 1,
	SW_EVENT_EXEC = 2,
	SW_EVENT_EXIT = 3,
	SW_EVENT_REAP = 4,
	SW_EVENT_OOM = 5,
	SW_EVENT_BRIEF = 6,
	SW_EVENT_TALLY = 7,
	SW_EVENT_EXEC_BRIEF = 8,
	SW_EVENT_TYPE_MAX = 9,
};

enum sw_flags {
	SW_FLAG_ARGV_TRUNCATED = 1 << 0,
	SW_FLAG_ARGV_MISSING = 1 << 1,  /* exec began before we attached, or argv was not readable */
	SW_FLAG_CLONE_PARENT = 1 << 2,  /* ppid holds the caller; the parent is the caller's parent */
};

struct sw_header {
	__u16 type;
	__u16 size;      /* bytes of the whole event, header included */
	__u32 pid;       /* thread-group id: the process */
	__u64 ts_ns;     /* CLOCK_BOOTTIME, like /proc/<pid>/stat start times */
	__u64 cgroup_id; /* cgroup v2 id of the task that produced the event */
	__u32 ppid;      /* fork: the caller; others: 0, user space knows the parent */
	__u32 flags;     /* enum sw_flags */
	char comm[SW_COMM_LEN];
};

/* For SW_EVENT_FORK and SW_EVENT_REAP the header is the whole event. */

struct sw_exit_event {
	struct sw_header hdr;
	/* A process still awaiting its reap whose dead slot this exit took (pids
	 * share a slot modulo SW_DEAD_SLOTS): the kernel side will not report
	 * its reap, user space settles it from /proc.  0 when none. */
	__u32 evicted_pid;
	__u32 reserved; /* explicit, so the layout has no hidden padding */
};

/* A process that was forked, exited and was reaped while its fork was held:
 * the header is its fork's (ts = fork time, ppid = the caller, its comm and
 * cgroup then), the tail its exit and reap times. */
struct sw_brief_event {
	struct sw_header hdr;
	__u64 exited_ns;
	__u64 reaped_ns;
};

/* Children of one spawner forked in one second that each lived as a BRIEF
 * would tell, counted instead of told one by one (tallies.h): the header is
 * the first one's fork (pid 0: the kernel keeps no pid), the tail the count,
 * and which occupancy of which tally slot it was, so user space can tell what
 * its sweep already read of it. */
struct sw_tally_event {
	struct sw_header hdr;
	__u32 slot;  /* index in sw_tallies */
	__u32 gen;   /* the slot's occupancy */
	__u32 count; /* children */
	__u32 reserved;
	__u64 last_exited_ns;
	__u64 last_reaped_ns;
	__u64 argv_hash; /* of the command line they exec'd (the header's comm is the exec's); 0: none */
};

/* SW_EVENT_EXEC: the header is the exec's (ppid 0).  SW_EVENT_EXEC_BRIEF, a
 * process that was forked, exec'd, exited and was reaped with nothing else in
 * between (births.h): the header is its exec's time and comm, its fork's caller,
 * clone flag and cgroup; the tail's times tell the rest. */
struct sw_exec_event {
	struct sw_header hdr;
	__u32 argc;      /* arguments captured */
	__u32 argv_size; /* bytes used in argv: NUL-separated strings */
	__u64 forked_ns; /* of an EXEC_BRIEF; 0 in an EXEC */
	__u64 exited_ns;
	__u64 reaped_ns;
	/* Of a held exec (SW_HOLD_EXECS), the command line's keyed hash (sw_argv_hash):
	 * a tally of short exec'd lives names it instead of the argv; 0 otherwise. */
	__u64 argv_hash;
	/* In sw_exec_slots: the process whose held exec the slot keeps, which no
	 * capture may write over (births.h); 0 when none.  Not for user space. */
	__u32 holder;
	__u32 reserved;
	char filename[SW_FILENAME_LEN];
	char argv[SW_ARGV_BYTES];
};

struct sw_oom_event {
	struct sw_header hdr;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	__u64 total_vm_kb;
};

/* An exit moves a state to the next one. */
enum sw_birth_state {
	SW_BIRTH_EMPTY = 0,
	SW_BIRTH_ALIVE = 1,  /* forked, nothing else yet */
	SW_BIRTH_EXITED = 2, /* and exited: a zombie awaiting its reap */
	SW_BIRTH_EXECED = 3, /* forked and exec'd once, the exec held in sw_exec_slots */
	SW_BIRTH_EXECED_EXITED = 4,
};

/* A held fork, in the sw_births array that user space maps read-only and
 * sweeps for forks held too long (no record came for them).  pid first, then
 * state: cleared together as one zero word, so the sweep finds occupied slots
 * without reading the rest. */
struct sw_birth {
	__u32 pid; /* the slot's tag: pid % SW_BIRTH_SLOTS is the index */
	__u32 state; /* enum sw_birth_state */
	__u64 forked_ns;
	__u64 exited_ns;
	__u64 cgroup_id; /* the caller's at fork, as a fork record carries */
	__u32 ppid;      /* the caller */
	__u32 flags;     /* SW_FLAG_CLONE_PARENT */
	char comm[SW_COMM_LEN];
	__u32 exec_slot; /* of the EXECED states: its exec's slot in sw_exec_slots */
	__u32 reserved;
};

/* A spawner's tally in sw_tallies, which user space maps read-only.  Only
 * the programs of the slot's own CPU write it, and they never run nested on a
 * CPU (the kernel skips a tracing program that would), so the fields need no
 * atomics; `seq` is odd while a program writes, so a reader that finds the
 * same even seq before and after its copy has a whole slot. */
struct sw_tally {
	__u32 seq;
	__u32 ppid;   /* the spawner, as a fork record's ppid; with count 0 the slot is empty */
	__u32 second; /* of the forks, CLOCK_BOOTTIME */
	__u32 flags;  /* SW_FLAG_CLONE_PARENT */
	__u32 gen;    /* occupancies of the slot so far */
	__u32 count;  /* children tallied in this occupancy */
	__u64 first_forked_ns;
	__u64 last_exited_ns;
	__u64 last_reaped_ns;
	__u64 cgroup_id; /* the caller's at fork, as a fork record carries */
	char comm[SW_COMM_LEN];
	__u64 argv_hash; /* as the record's */
};

#endif /* SPAWNWATCH_H */
