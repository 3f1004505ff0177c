/* SPDX-License-Identifier: GPL-2.0 */
/* Held forks.  Most processes of a fork storm are forked, exit and are reaped
 * within milliseconds with nothing in between; three records each (fork,
 * exit, reap) cost the reader three times what one does.  So a fork is held
 * in the child's sw_births slot, without a record, until the process does
 * something a record must say:
 *
 *   - it forks a child (user space must know a parent before its child), the
 *     OOM killer marks it, or another pid needs its slot: its fork record goes
 *     out then (with its exec's and exit's if it had them), with the fork's
 *     own time, and the process goes on as if never held;
 *   - it execs: with SW_HOLD_EXECS (the loader's choice: `watch` tells short
 *     lives whole, `trace` each exec as it happens), the first exec stays in
 *     its sw_exec_slots slot, marked with its holder so no capture writes over
 *     it, and the process stays held, EXECED; without, or at a second exec,
 *     its fork (and held exec) go out before the exec;
 *   - it exits: the slot keeps the exit time, still no record;
 *   - it is reaped after exiting held: one BRIEF record tells its whole life,
 *     or one EXEC_BRIEF, its exec with its fork, exit and reap.
 *
 * A process held longer than user space wants to wait (a worker that never
 * execs, a server that never forks, a zombie nobody reaps) is announced by
 * user space itself, which maps these arrays read-only and sweeps them
 * (bpf_timer is refused in tracing programs).  Writers publish a slot's tag
 * (pid, state) last and take it with a compare-and-swap, so a reader that
 * checks the tag and reads twice sees a whole slot, and of two programs racing
 * for one slot (a process's exit or reap against another pid's fork on another
 * CPU) one sends its records. */
#ifndef SPAWNWATCH_BIRTHS_H
#define SPAWNWATCH_BIRTHS_H

#define sw_compiler_barrier() asm volatile("" ::: "memory")

/* pid and state as one word (little-endian: pid low), so that a program takes
 * a slot from another CPU's with one compare-and-swap: the fields are copied
 * first, the record is sent only if the tag was still the one read. */
#define SW_BIRTH_TAG(pid, state) ((__u64)(state) << 32 | (pid))

static __always_inline __u64 *sw_birth_tag(struct sw_birth *birth)
{
	return (__u64 *)birth;
}

static __always_inline struct sw_birth *sw_birth_slot(__u32 pid)
{
	__u32 slot = pid % SW_BIRTH_SLOTS;

	return sw_births.lookup(&slot);
}

/* `pid`'s slot while it holds pid's fork, else NULL. */
static __always_inline struct sw_birth *sw_held_birth(__u32 pid)
{
	struct sw_birth *birth = sw_birth_slot(pid);

	if (!birth || birth->pid != pid || birth->state == SW_BIRTH_EMPTY)
		return NULL;
	return birth;
}

/* A header as the held fork's record had it when it was made. */
static __always_inline void sw_fill_header_of_birth(struct sw_header *hdr, __u16 type, __u16 size,
						    const struct sw_birth *birth, __u32 pid)
{
	hdr->type = type;
	hdr->size = size;
	hdr->pid = pid;
	hdr->ts_ns = birth->forked_ns;
	hdr->cgroup_id = birth->cgroup_id;
	hdr->ppid = birth->ppid;
	hdr->flags = birth->flags;
	__builtin_memcpy(hdr->comm, birth->comm, SW_COMM_LEN);
}

/* Empties the slot if it still holds `tag`: false when another program took
 * it first (it sends what this one would have). */
static __always_inline bool sw_take_birth(struct sw_birth *birth, __u64 tag)
{
	return __sync_val_compare_and_swap(sw_birth_tag(birth), tag, 0) == tag;
}

/* Bytes of an exec record as its slot holds it. */
static __always_inline __u32 sw_exec_size(const struct sw_exec_event *event)
{
	__u32 argv_size = event->argv_size;

	if (argv_size > SW_ARGV_BYTES)
		argv_size = SW_ARGV_BYTES;
	return offsetof(struct sw_exec_event, argv) + argv_size;
}

/* Frees an exec slot once its record is out: the capture tag first, then the
 * holder that keeps captures away. */
static __always_inline void sw_release_exec(struct sw_exec_event *event)
{
	event->hdr.pid = 0;
	sw_compiler_barrier();
	event->holder = 0;
}

/* Sends the exec `pid` holds in exec slot `index` as the EXEC record it would
 * have had, and gives `comm` its comm (its exit's).  A slot that no longer
 * holds it loses the exec: counted, so user space reads /proc. */
static __always_inline void sw_send_held_exec(__u32 index, __u32 pid, char *comm)
{
	struct sw_exec_event *event = sw_exec_slots.lookup(&index);

	if (!event || event->holder != pid) {
		sw_count_lost(SW_EVENT_EXEC);
		return;
	}
	__builtin_memcpy(comm, event->hdr.comm, SW_COMM_LEN);
	event->hdr.type = SW_EVENT_EXEC;
	if (sw_events.ringbuf_output(event, sw_exec_size(event), SW_SUBMIT_FLAGS))
		sw_count_lost(SW_EVENT_EXEC);
	sw_release_exec(event);
}

/* Sends the records a held process in `state` would have had so far, from a
 * copy of its slot: fork, its exec if held, and exit if it exited (its reap
 * then comes as a REAP, from the dead slot taken here). */
static __always_inline void sw_send_held(struct sw_birth *held, __u32 pid, __u32 state)
{
	struct sw_header *fork = sw_events.ringbuf_reserve(sizeof(*fork));
	struct sw_exit_event *exit;
	__u32 evicted;

	if (fork) {
		sw_fill_header_of_birth(fork, SW_EVENT_FORK, sizeof(*fork), held, pid);
		sw_events.ringbuf_submit(fork, SW_SUBMIT_FLAGS);
	} else {
		sw_count_lost(SW_EVENT_FORK);
	}
	if (state >= SW_BIRTH_EXECED)
		sw_send_held_exec(held->exec_slot, pid, held->comm);
	if (state != SW_BIRTH_EXITED && state != SW_BIRTH_EXECED_EXITED)
		return;
	evicted = sw_take_dead_slot(pid);
	exit = sw_events.ringbuf_reserve(sizeof(*exit));
	if (!exit) {
		sw_count_lost(SW_EVENT_EXIT);
		return;
	}
	sw_fill_header_of_birth(&exit->hdr, SW_EVENT_EXIT, sizeof(*exit), held, pid);
	exit->hdr.ts_ns = held->exited_ns;
	exit->hdr.ppid = 0;
	exit->hdr.flags = 0;
	exit->evicted_pid = evicted;
	exit->reserved = 0;
	sw_events.ringbuf_submit(exit, SW_SUBMIT_FLAGS);
}

/* Takes the slot and sends what it held.  The slot is copied before it is
 * taken: once empty, a fork on another CPU may fill it again.  One record at
 * a time, each released where it is reserved (Debian 12's 6.1 verifier, with
 * its clang, refused two reservations kept across the compare-and-swap).
 * False when the slot changed under it (try again). */
static __always_inline bool sw_try_flush_birth(struct sw_birth *birth)
{
	__u64 tag = *(volatile __u64 *)sw_birth_tag(birth);
	struct sw_birth held;

	if (!(__u32)tag)
		return true;
	__builtin_memcpy(&held, birth, sizeof(held));
	if (!sw_take_birth(birth, tag))
		return false;
	sw_send_held(&held, (__u32)tag, tag >> 32);
	return true;
}

/* Flushes whatever the slot holds; a slot that keeps changing under it (other
 * CPUs flushing and filling it) is left to the program that changed it. */
static __always_inline void sw_flush_birth(struct sw_birth *birth)
{
	if (!sw_try_flush_birth(birth))
		sw_try_flush_birth(birth);
}

/* Flushes `pid`'s held fork, if it is held. */
static __always_inline void sw_flush_held(__u32 pid)
{
	struct sw_birth *birth = sw_held_birth(pid);

	if (birth)
		sw_flush_birth(birth);
}

#endif /* SPAWNWATCH_BIRTHS_H */
