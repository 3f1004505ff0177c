/* SPDX-License-Identifier: GPL-2.0 */
/* oom:mark_victim names the process the OOM killer chose.  It runs in the
 * task that hit the limit, so the victim's cgroup comes from user space's
 * process table; the RSS fields exist on kernels >= 6.8 only. */

TRACEPOINT_PROBE(oom, mark_victim)
{
	struct sw_oom_event *event;
	__u32 pid = args->pid;

	sw_flush_held(pid); /* the victim's fork before its OOM kill (births.h) */
	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_OOM);
		return 0;
	}
	sw_fill_header(&event->hdr, SW_EVENT_OOM, sizeof(*event), pid);
	__builtin_memset(event->hdr.comm, 0, SW_COMM_LEN);
#ifdef SW_OOM_HAS_RSS
	TP_DATA_LOC_READ_STR(event->hdr.comm, comm, SW_COMM_LEN);
	event->anon_rss_kb = args->anon_rss;
	event->file_rss_kb = args->file_rss;
	event->shmem_rss_kb = args->shmem_rss;
	event->total_vm_kb = args->total_vm;
#else
	event->anon_rss_kb = 0;
	event->file_rss_kb = 0;
	event->shmem_rss_kb = 0;
	event->total_vm_kb = 0;
#endif
	/* An OOM kill is rare and urgent: wake the reader now. */
	sw_events.ringbuf_submit(event, BPF_RB_FORCE_WAKEUP);
	return 0;
}
