/* SPDX-License-Identifier: GPL-2.0 */
/* Maps and helpers shared by every hook.  bcc compiles one text, so this is
 * included once, by spawnwatch.bpf.c, before the hooks. */
#ifndef SPAWNWATCH_MAPS_H
#define SPAWNWATCH_MAPS_H

BPF_RINGBUF_OUTPUT(sw_events, SW_RINGBUF_PAGES);

/* Events that could not be reserved, by event type: a ring buffer reports no
 * loss by itself, so every failed reserve is counted here. */
BPF_PERCPU_ARRAY(sw_lost_stats, __u64, SW_EVENT_TYPE_MAX);

/* pid -> parent pid as seen at fork: answers CLONE_PARENT and fills ppid on
 * later events without reading task_struct. */
BPF_TABLE("lru_hash", __u32, __u32, sw_parents, SW_MAX_TRACKED_PIDS);

/* thread id -> argv captured at execve entry, emitted when the exec commits.
 * The thread may migrate CPUs in between (sched_exec), hence a hash. */
BPF_TABLE("lru_hash", __u32, struct sw_exec_event, sw_execs, SW_MAX_EXECS_IN_FLIGHT);
BPF_PERCPU_ARRAY(sw_exec_heap, struct sw_exec_event, 1);

/* pid of an exited process -> what its reap event needs (the reap runs in an
 * RCU callback, where "current" is some other task). */
BPF_TABLE("lru_hash", __u32, struct sw_dead_process, sw_dead, SW_MAX_TRACKED_PIDS);

static __always_inline void sw_count_lost(__u32 type)
{
	__u64 *lost = sw_lost_stats.lookup(&type);

	if (lost)
		(*lost)++;
}

static __always_inline void sw_fill_header(struct sw_header *hdr, __u16 type, __u16 size, __u32 pid)
{
	hdr->type = type;
	hdr->size = size;
	hdr->pid = pid;
	hdr->ts_ns = bpf_ktime_get_boot_ns();
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->flags = 0;
}

static __always_inline __u32 sw_known_parent(__u32 pid)
{
	__u32 *ppid = sw_parents.lookup(&pid);

	return ppid ? *ppid : 0;
}

#endif /* SPAWNWATCH_MAPS_H */
