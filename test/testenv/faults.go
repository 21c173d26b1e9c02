package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// The faults a chaos test injects into the control plane itself. envtest
// keeps its processes to itself, so they are found by what they run: the
// binary envtest started, with this control plane's certificate or data
// directory on its command line (several packages' control planes may run
// at once).

// restarted is the kube-apiserver a restart started in place of envtest's;
// Stop ends it.
type restarted struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// RestartAPIServer stops the kube-apiserver with sig (SIGKILL: a crash;
// SIGTERM: a graceful restart) and starts the same command line again, on
// the same etcd, port and certificates, as a restarted static Pod would. It
// returns once the new one answers /readyz.
func (e *Env) RestartAPIServer(ctx context.Context, sig syscall.Signal) error {
	api := e.env.ControlPlane.APIServer
	pid, err := findProcess(api.Path, "--cert-dir="+api.CertDir)
	if err != nil {
		return fmt.Errorf("finding the kube-apiserver: %w", err)
	}
	args, err := procStrings(pid, "cmdline")
	if err != nil {
		return err
	}
	environ, err := procStrings(pid, "environ")
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signalling the kube-apiserver (pid %d): %w", pid, err)
	}
	// Wait until it is gone: a graceful stop that outlasts its grace is
	// ended, as the kubelet ends a container.
	gone := func(d time.Duration) error {
		return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, d, true, func(context.Context) (bool, error) {
			return !alive(pid), nil
		})
	}
	if err := gone(30 * time.Second); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if err := gone(30 * time.Second); err != nil {
			return fmt.Errorf("the kube-apiserver (pid %d) did not stop on %s, nor on SIGKILL: %w", pid, sig, err)
		}
	}
	e.apiserver.mu.Lock()
	defer e.apiserver.mu.Unlock()
	if e.apiserver.exited != nil {
		<-e.apiserver.exited // ours: reaped
	}
	kube, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	// Its port may be taken for a moment by another process's connection
	// (the machine runs other suites): a start that exits is tried again,
	// as the kubelet restarts a static Pod.
	var out bytes.Buffer
	for attempt := 1; ; attempt++ {
		out.Reset()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = environ
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting the kube-apiserver again: %w", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		e.apiserver.cmd, e.apiserver.exited = cmd, exited
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			select {
			case <-exited:
				return false, errors.New("it exited")
			default:
			}
			_, err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			return err == nil, nil
		})
		if err == nil {
			return nil
		}
		if attempt == 10 {
			return fmt.Errorf("the restarted kube-apiserver never became ready (%d starts): %w\n%s", attempt, err, tail(out.String(), 2000))
		}
		_ = cmd.Process.Kill()
		<-exited
		time.Sleep(time.Second)
	}
}

// PauseEtcd stops etcd (SIGSTOP) for d and continues it: a disk that
// stalls, a process the node starves.
func (e *Env) PauseEtcd(d time.Duration) error {
	etcd := e.env.ControlPlane.Etcd
	pid, err := findProcess(etcd.Path, etcd.DataDir)
	if err != nil {
		return fmt.Errorf("finding etcd: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pausing etcd (pid %d): %w", pid, err)
	}
	time.Sleep(d)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("continuing etcd (pid %d): %w", pid, err)
	}
	return nil
}

// stopRestarted ends a kube-apiserver a restart started.
func (e *Env) stopRestarted() error {
	e.apiserver.mu.Lock()
	defer e.apiserver.mu.Unlock()
	cmd := e.apiserver.cmd
	if cmd == nil {
		return nil
	}
	exited := e.apiserver.exited
	e.apiserver.cmd, e.apiserver.exited = nil, nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	return nil
}

// findProcess returns the pid of the live process running binary whose
// command line holds marker.
func findProcess(binary, marker string) (int, error) {
	want, err := filepath.EvalSymlinks(binary)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		if err != nil || exe != want {
			continue
		}
		args, err := procStrings(pid, "cmdline")
		if err != nil || !strings.Contains(strings.Join(args, " "), marker) || !alive(pid) {
			continue
		}
		return pid, nil
	}
	return 0, fmt.Errorf("no live %s with %q on its command line", filepath.Base(binary), marker)
}

func procStrings(pid int, file string) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	if err != nil {
		return nil, err
	}
	s := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if len(s) == 0 || s[0] == "" {
		return nil, errors.New("empty /proc/" + strconv.Itoa(pid) + "/" + file)
	}
	return s, nil
}

// alive says whether pid runs (a zombie does not).
func alive(pid int) bool {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the last ')'.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
