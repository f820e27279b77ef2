// Package nbdclient is a small, strict NBD client for tests, benchmarks and
// tools (crash tests that must know exactly which writes a FLUSH
// acknowledged, for instance). It negotiates like libnbd (fixed newstyle,
// optional TLS, structured replies, base:allocation, NBD_OPT_GO or
// NBD_OPT_EXPORT_NAME) and then runs one request at a time (Read, Write,
// Cmd, BlockStatus) or pipelines them (Send, then Recv from one goroutine).
// Every reply is checked against the protocol (chunk bounds, DF, REQ_ONE,
// context ids), so a test using it also catches a server breaking the spec.
//
// It is not a block device: no reconnection, no request splitting, no
// multi-conn. Use qemu or libnbd for that.
//
//	c, err := nbdclient.Dial("127.0.0.1:10809", nbdclient.Options{Export: "vm1", Structured: true})
//	err = c.Write(0, data, nbdclient.FlagFUA)
//	err = c.Cmd(nbdclient.CmdFlush, 0, 0, 0)
//	p, err := c.Read(0, 4096)
//	err = c.Disconnect()
package nbdclient

import "github.com/zosproject/zos/blockd/nbd/internal/wire"

// Request is a transmission request header (the handle is set by Send).
type Request = wire.Request

// Extent is one base:allocation descriptor; Flags holds StateHole and
// StateZero.
type Extent = wire.Extent

// Commands.
const (
	CmdRead        = wire.CmdRead
	CmdWrite       = wire.CmdWrite
	CmdFlush       = wire.CmdFlush
	CmdTrim        = wire.CmdTrim
	CmdCache       = wire.CmdCache
	CmdWriteZeroes = wire.CmdWriteZeroes
	CmdBlockStatus = wire.CmdBlockStatus
)

// Command flags.
const (
	FlagFUA      = wire.CmdFlagFUA
	FlagNoHole   = wire.CmdFlagNoHole
	FlagDF       = wire.CmdFlagDF
	FlagReqOne   = wire.CmdFlagReqOne
	FlagFastZero = wire.CmdFlagFastZero
)

// Transmission flags (Conn.Flags).
const (
	TFlagReadOnly     = wire.TFlagReadOnly
	TFlagSendFlush    = wire.TFlagSendFlush
	TFlagSendFUA      = wire.TFlagSendFUA
	TFlagSendTrim     = wire.TFlagSendTrim
	TFlagSendZeroes   = wire.TFlagSendWriteZeroes
	TFlagSendDF       = wire.TFlagSendDF
	TFlagCanMultiConn = wire.TFlagCanMultiConn
	TFlagSendCache    = wire.TFlagSendCache
	TFlagSendFastZero = wire.TFlagSendFastZero
)

// base:allocation flags.
const (
	StateHole = wire.StateHole
	StateZero = wire.StateZero
)

// NBD error values (Errno).
const (
	EPERM     = wire.EPERM
	EIO       = wire.EIO
	ENOMEM    = wire.ENOMEM
	EINVAL    = wire.EINVAL
	ENOSPC    = wire.ENOSPC
	EOVERFLOW = wire.EOVERFLOW
	ENOTSUP   = wire.ENOTSUP
	ESHUTDOWN = wire.ESHUTDOWN
)

// Options and option replies, for the low-level Hello/Option helpers.
const (
	OptExportName      = wire.OptExportName
	OptAbort           = wire.OptAbort
	OptList            = wire.OptList
	OptStartTLS        = wire.OptStartTLS
	OptInfo            = wire.OptInfo
	OptGo              = wire.OptGo
	OptStructuredReply = wire.OptStructuredReply
	OptListMetaContext = wire.OptListMetaContext
	OptSetMetaContext  = wire.OptSetMetaContext

	RepAck         = wire.RepAck
	RepServer      = wire.RepServer
	RepInfo        = wire.RepInfo
	RepMetaContext = wire.RepMetaContext
	RepErrUnsup    = wire.RepErrUnsup
	RepErrPolicy   = wire.RepErrPolicy
	RepErrInvalid  = wire.RepErrInvalid
	RepErrTLSReqd  = wire.RepErrTLSReqd
	RepErrUnknown  = wire.RepErrUnknown
	RepErrShutdown = wire.RepErrShutdown
)
