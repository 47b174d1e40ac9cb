/* systemd's readiness protocol (sd_notify(3)), written by hand: one
 * datagram to $NOTIFY_SOCKET, no libsystemd. With `Type=notify` systemd
 * waits for READY=1; after a binary upgrade the new process sends its
 * MAINPID (which needs `NotifyAccess=all`). Without NOTIFY_SOCKET nothing
 * is sent. Main thread only. */
#ifndef GRELAY_SD_NOTIFY_H
#define GRELAY_SD_NOTIFY_H

/* Sends state ("READY=1", "STOPPING=1", "MAINPID=n\nREADY=1", ...).
 * Failures are logged at debug and otherwise ignored. */
void sd_notify_send(const char *state);

#endif
