// Command pause is the process of every pod's sandbox: it holds the pod's
// namespaces open, reaps orphans (it is PID 1 when the pod shares its PID
// namespace) and exits on SIGINT or SIGTERM. Built static, it is the only file of
// the pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
