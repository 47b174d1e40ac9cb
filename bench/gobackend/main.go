// A grpc-go echo server for benchmarks: the same methods as
// bench/backend/echo_backend.c, served by a real gRPC implementation.
//
//	/bench.Echo/Unary  unary: the request's message back as the response
//	/bench.Echo/Bidi   bidi streaming: every message back as it arrives,
//	                   the status OK once the client half-closes
//
// Payloads are raw bytes: the codec below passes them through, so no
// protoc and no generated code are needed. It is registered under the name
// "proto", the codec grpc-go picks for plain "application/grpc", so what
// h2load and bench/load/stream_load send is understood as it is.
//
// Settings (the fairness notes are in bench/README.md): stream window 1 MiB
// and connection window 16 MiB, as the C backend sets them (a fixed window
// also turns off grpc-go's BDP probing pings); read and write buffers
// 64 KiB, the C backend's recv buffer; up to 10,000 concurrent streams; no
// logging below errors. GOMAXPROCS is left to the environment: bench.py
// starts it with GOMAXPROCS=1 pinned to one CPU, as the C backend's single
// thread is.
//
// Usage: gobackend HOST PORT (prints "ready" once it listens)
package main

import (
	"context"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/grpclog"
)

// rawCodec marshals a *[]byte as its bytes and unmarshals into one without
// copying (grpc-go hands each received message its own buffer).
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

// echoServer is the service's implementation: it holds no state.
type echoServer interface{}

func unaryHandler(srv interface{}, ctx context.Context, dec func(interface{}) error,
	interceptor grpc.UnaryServerInterceptor) (interface{}, error) {
	var msg []byte
	if err := dec(&msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

func bidiHandler(srv interface{}, stream grpc.ServerStream) error {
	for {
		var msg []byte
		if err := stream.RecvMsg(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := stream.SendMsg(&msg); err != nil {
			return err
		}
	}
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unaryHandler}},
	Streams: []grpc.StreamDesc{{StreamName: "Bidi", Handler: bidiHandler,
		ServerStreams: true, ClientStreams: true}},
	Metadata: "bench/gobackend/main.go",
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gobackend HOST PORT")
		os.Exit(2)
	}
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard, ioutil.Discard, os.Stderr))
	encoding.RegisterCodec(rawCodec{})
	lis, err := net.Listen("tcp", net.JoinHostPort(os.Args[1], os.Args[2]))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer(
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(16<<20),
		grpc.ReadBufferSize(64<<10),
		grpc.WriteBufferSize(64<<10),
		grpc.MaxConcurrentStreams(10000),
		grpc.MaxRecvMsgSize(64<<20),
		grpc.MaxSendMsgSize(64<<20))
	var impl echoServer = struct{}{}
	srv.RegisterService(&echoDesc, impl)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Stop()
	}()
	fmt.Println("ready")
	if err := srv.Serve(lis); err != nil && err != grpc.ErrServerStopped {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
