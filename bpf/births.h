/* SPDX-License-Identifier: GPL-2.0 */
/* Held forks.  Most processes of a fork storm are forked, exit and are reaped
 * within milliseconds with nothing in between; three records each (fork,
 * exit, reap) cost the reader three times what one does.  So a fork is held
 * in the child's sw_births slot, without a record, until the process does
 * something a record must say:
 *
 *   - it forks a child (user space must know a parent before its child), it
 *     execs, the OOM killer marks it, or another pid needs its slot: its fork
 *     record goes out then (with its exit record if it had exited), with the
 *     fork's own time, and the process goes on as if never held;
 *   - it exits: the slot keeps the exit time, still no record;
 *   - it is reaped after exiting held: one BRIEF record tells its whole life.
 *
 * A process held longer than user space wants to wait (a worker that never
 * execs, a zombie nobody reaps) is announced by user space itself, which maps
 * this array read-only and sweeps it (bpf_timer is refused in tracing
 * programs).  Writers publish a slot's tag (pid, state) last and clear it
 * first, so a reader that checks the tag and reads twice sees a whole slot. */
#ifndef SPAWNWATCH_BIRTHS_H
#define SPAWNWATCH_BIRTHS_H

#define sw_compiler_barrier() asm volatile("" ::: "memory")

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
						    const struct sw_birth *birth)
{
	hdr->type = type;
	hdr->size = size;
	hdr->pid = birth->pid;
	hdr->ts_ns = birth->forked_ns;
	hdr->cgroup_id = birth->cgroup_id;
	hdr->ppid = birth->ppid;
	hdr->flags = birth->flags;
	__builtin_memcpy(hdr->comm, birth->comm, SW_COMM_LEN);
}

static __always_inline void sw_clear_birth(struct sw_birth *birth)
{
	birth->pid = 0;
	birth->state = SW_BIRTH_EMPTY;
}

/* The records a held process would have had so far (fork, and exit if it
 * exited: its reap then comes as a REAP, from the dead slot taken here); the
 * slot is freed. */
static __always_inline void sw_flush_birth(struct sw_birth *birth)
{
	struct sw_header *fork;
	struct sw_exit_event *exit;

	fork = sw_events.ringbuf_reserve(sizeof(*fork));
	if (fork) {
		sw_fill_header_of_birth(fork, SW_EVENT_FORK, sizeof(*fork), birth);
		sw_events.ringbuf_submit(fork, SW_SUBMIT_FLAGS);
	} else {
		sw_count_lost(SW_EVENT_FORK);
	}
	if (birth->state == SW_BIRTH_EXITED) {
		exit = sw_events.ringbuf_reserve(sizeof(*exit));
		if (exit) {
			sw_fill_header_of_birth(&exit->hdr, SW_EVENT_EXIT, sizeof(*exit), birth);
			exit->hdr.ts_ns = birth->exited_ns;
			exit->hdr.ppid = 0;
			exit->hdr.flags = 0;
			exit->evicted_pid = sw_take_dead_slot(birth->pid);
			exit->reserved = 0;
			sw_events.ringbuf_submit(exit, SW_SUBMIT_FLAGS);
		} else {
			sw_take_dead_slot(birth->pid);
			sw_count_lost(SW_EVENT_EXIT);
		}
	}
	sw_clear_birth(birth);
}

/* Flushes `pid`'s held fork, if it is held. */
static __always_inline void sw_flush_held(__u32 pid)
{
	struct sw_birth *birth = sw_held_birth(pid);

	if (birth)
		sw_flush_birth(birth);
}

#endif /* SPAWNWATCH_BIRTHS_H */
