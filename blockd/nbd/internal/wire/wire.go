// Package wire is the NBD wire codec: protocol constants and the encoding
// and decoding of every fixed-layout message the server and the test client
// exchange (handshake, options, option replies, requests, simple and
// structured replies). It follows the NBD protocol specification
// (NetworkBlockDevice/nbd doc/proto.md). Decoders never panic on any input
// and never allocate more than the input they are given; they are fuzzed.
//
// The magic numbers and the handful of constants that
// github.com/pojntfx/go-nbd/pkg/protocol defines are taken from it; a test
// cross-checks the rest against the specification's values.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Magic numbers.
const (
	MagicNBD             = protocol.NEGOTIATION_MAGIC_OLDSTYLE // "NBDMAGIC"
	MagicOption          = protocol.NEGOTIATION_MAGIC_OPTION   // "IHAVEOPT"
	MagicOptionReply     = protocol.NEGOTIATION_MAGIC_REPLY
	MagicRequest         = protocol.TRANSMISSION_MAGIC_REQUEST
	MagicSimpleReply     = protocol.TRANSMISSION_MAGIC_REPLY
	MagicStructuredReply = uint32(0x668e33ef)
)

// Handshake flags (server) and client flags.
const (
	FlagFixedNewstyle = protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE
	FlagNoZeroes      = uint16(1 << 1)

	ClientFlagFixedNewstyle = uint32(1 << 0)
	ClientFlagNoZeroes      = uint32(1 << 1)
)

// Transmission flags.
const (
	TFlagHasFlags        = protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS
	TFlagReadOnly        = uint16(1 << 1)
	TFlagSendFlush       = uint16(1 << 2)
	TFlagSendFUA         = uint16(1 << 3)
	TFlagRotational      = uint16(1 << 4)
	TFlagSendTrim        = uint16(1 << 5)
	TFlagSendWriteZeroes = uint16(1 << 6)
	TFlagSendDF          = uint16(1 << 7)
	TFlagCanMultiConn    = protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN
	TFlagSendResize      = uint16(1 << 9)
	TFlagSendCache       = uint16(1 << 10)
	TFlagSendFastZero    = uint16(1 << 11)
)

// Options.
const (
	OptExportName      = uint32(1)
	OptAbort           = protocol.NEGOTIATION_ID_OPTION_ABORT
	OptList            = protocol.NEGOTIATION_ID_OPTION_LIST
	OptPeekExport      = uint32(4)
	OptStartTLS        = uint32(5)
	OptInfo            = protocol.NEGOTIATION_ID_OPTION_INFO
	OptGo              = protocol.NEGOTIATION_ID_OPTION_GO
	OptStructuredReply = uint32(8)
	OptListMetaContext = uint32(9)
	OptSetMetaContext  = uint32(10)
	OptExtendedHeaders = uint32(11)
)

// Option reply types.
const (
	RepAck         = protocol.NEGOTIATION_TYPE_REPLY_ACK
	RepServer      = protocol.NEGOTIATION_TYPE_REPLY_SERVER
	RepInfo        = protocol.NEGOTIATION_TYPE_REPLY_INFO
	RepMetaContext = uint32(4)

	RepFlagError        = uint32(1 << 31)
	RepErrUnsup         = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED
	RepErrPolicy        = RepFlagError | 2
	RepErrInvalid       = RepFlagError | 3
	RepErrPlatform      = RepFlagError | 4
	RepErrTLSReqd       = RepFlagError | 5
	RepErrUnknown       = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
	RepErrShutdown      = RepFlagError | 7
	RepErrBlockSizeReqd = RepFlagError | 8
	RepErrTooBig        = RepFlagError | 9
	RepErrExtHeaderReqd = RepFlagError | 10
)

// Info types (NBD_OPT_INFO / NBD_OPT_GO).
const (
	InfoExport      = protocol.NEGOTIATION_TYPE_INFO_EXPORT
	InfoName        = protocol.NEGOTIATION_TYPE_INFO_NAME
	InfoDescription = protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION
	InfoBlockSize   = protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE
)

// Commands.
const (
	CmdRead        = protocol.TRANSMISSION_TYPE_REQUEST_READ
	CmdWrite       = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	CmdDisc        = protocol.TRANSMISSION_TYPE_REQUEST_DISC
	CmdFlush       = uint16(3)
	CmdTrim        = uint16(4)
	CmdCache       = uint16(5)
	CmdWriteZeroes = uint16(6)
	CmdBlockStatus = uint16(7)
	CmdResize      = uint16(8)
)

// Command flags.
const (
	CmdFlagFUA        = uint16(1 << 0)
	CmdFlagNoHole     = uint16(1 << 1)
	CmdFlagDF         = uint16(1 << 2)
	CmdFlagReqOne     = uint16(1 << 3)
	CmdFlagFastZero   = uint16(1 << 4)
	CmdFlagPayloadLen = uint16(1 << 5)
)

// Structured reply flags and types.
const (
	ReplyFlagDone = uint16(1 << 0)

	ReplyTypeNone        = uint16(0)
	ReplyTypeOffsetData  = uint16(1)
	ReplyTypeOffsetHole  = uint16(2)
	ReplyTypeBlockStatus = uint16(5)
	ReplyTypeError       = uint16(1<<15 | 1)
	ReplyTypeErrorOffset = uint16(1<<15 | 2)
)

// Error values.
const (
	EPERM     = protocol.TRANSMISSION_ERROR_EPERM
	EIO       = uint32(5)
	ENOMEM    = uint32(12)
	EINVAL    = protocol.TRANSMISSION_ERROR_EINVAL
	ENOSPC    = uint32(28)
	EOVERFLOW = uint32(75)
	ENOTSUP   = uint32(95)
	ESHUTDOWN = uint32(108)
)

// base:allocation flags.
const (
	StateHole = uint32(1 << 0)
	StateZero = uint32(1 << 1)
)

// Sizes of fixed-layout messages.
const (
	NewstyleHeaderSize    = 18 // NBDMAGIC, IHAVEOPT, handshake flags
	OptionHeaderSize      = 16
	OptionReplyHeaderSize = 20
	RequestSize           = 28
	SimpleReplySize       = 16
	StructuredHeaderSize  = 20
	ExportNameReplySize   = 10 // size + flags, then 124 zero bytes unless NO_ZEROES
	ExportNameZeroes      = 124
	MaxString             = 4096 // longest string the protocol allows
)

// MetaContextBaseAllocation is the only metadata context defined by the
// protocol.
const MetaContextBaseAllocation = "base:allocation"

// ErrShort is returned by decoders given too few bytes.
var ErrShort = errors.New("wire: message too short")

// ErrMalformed is returned by decoders given inconsistent content.
var ErrMalformed = errors.New("wire: malformed message")

// Request is a transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// DecodeRequest decodes a 28-byte request header. It returns the magic
// number it found so a caller can log a bad one; a wrong magic is an
// ErrMalformed error.
func DecodeRequest(b []byte) (r Request, magic uint32, err error) {
	if len(b) < RequestSize {
		return r, 0, ErrShort
	}
	magic = binary.BigEndian.Uint32(b[0:4])
	if magic != MagicRequest {
		return r, magic, fmt.Errorf("%w: request magic %#x", ErrMalformed, magic)
	}
	r.Flags = binary.BigEndian.Uint16(b[4:6])
	r.Type = binary.BigEndian.Uint16(b[6:8])
	r.Handle = binary.BigEndian.Uint64(b[8:16])
	r.Offset = binary.BigEndian.Uint64(b[16:24])
	r.Length = binary.BigEndian.Uint32(b[24:28])
	return r, magic, nil
}

// AppendRequest appends the encoding of r.
func AppendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicRequest)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Handle)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

// AppendSimpleReply appends a simple reply header.
func AppendSimpleReply(b []byte, errno uint32, handle uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicSimpleReply)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, handle)
}

// AppendStructuredHeader appends a structured reply chunk header.
func AppendStructuredHeader(b []byte, flags, typ uint16, handle uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicStructuredReply)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	return binary.BigEndian.AppendUint32(b, length)
}

// AppendErrorChunk appends a whole NBD_REPLY_TYPE_ERROR chunk (header and
// payload) with the done flag set. msg is clipped to MaxString bytes.
func AppendErrorChunk(b []byte, handle uint64, errno uint32, msg string) []byte {
	if len(msg) > MaxString {
		msg = msg[:MaxString]
	}
	b = AppendStructuredHeader(b, ReplyFlagDone, ReplyTypeError, handle, uint32(6+len(msg)))
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// AppendNoneChunk appends a final NBD_REPLY_TYPE_NONE chunk.
func AppendNoneChunk(b []byte, handle uint64) []byte {
	return AppendStructuredHeader(b, ReplyFlagDone, ReplyTypeNone, handle, 0)
}

// AppendHoleChunk appends a whole NBD_REPLY_TYPE_OFFSET_HOLE chunk.
func AppendHoleChunk(b []byte, flags uint16, handle, offset uint64, size uint32) []byte {
	b = AppendStructuredHeader(b, flags, ReplyTypeOffsetHole, handle, 12)
	b = binary.BigEndian.AppendUint64(b, offset)
	return binary.BigEndian.AppendUint32(b, size)
}

// AppendDataChunkHeader appends the header of an NBD_REPLY_TYPE_OFFSET_DATA
// chunk carrying n data bytes at offset; the data follows.
func AppendDataChunkHeader(b []byte, flags uint16, handle, offset uint64, n uint32) []byte {
	b = AppendStructuredHeader(b, flags, ReplyTypeOffsetData, handle, 8+n)
	return binary.BigEndian.AppendUint64(b, offset)
}

// StructuredHeader is a decoded structured reply chunk header.
type StructuredHeader struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Length uint32
}

// DecodeStructuredHeader decodes the 20-byte header after its magic has
// been checked by the caller (b includes the magic).
func DecodeStructuredHeader(b []byte) (StructuredHeader, error) {
	var h StructuredHeader
	if len(b) < StructuredHeaderSize {
		return h, ErrShort
	}
	if m := binary.BigEndian.Uint32(b); m != MagicStructuredReply {
		return h, fmt.Errorf("%w: structured reply magic %#x", ErrMalformed, m)
	}
	h.Flags = binary.BigEndian.Uint16(b[4:])
	h.Type = binary.BigEndian.Uint16(b[6:])
	h.Handle = binary.BigEndian.Uint64(b[8:])
	h.Length = binary.BigEndian.Uint32(b[16:])
	return h, nil
}

// OptionHeader is a decoded option request header.
type OptionHeader struct {
	Option uint32
	Length uint32
}

// DecodeOptionHeader decodes a 16-byte option header.
func DecodeOptionHeader(b []byte) (OptionHeader, error) {
	var h OptionHeader
	if len(b) < OptionHeaderSize {
		return h, ErrShort
	}
	if m := binary.BigEndian.Uint64(b); m != MagicOption {
		return h, fmt.Errorf("%w: option magic %#x", ErrMalformed, m)
	}
	h.Option = binary.BigEndian.Uint32(b[8:])
	h.Length = binary.BigEndian.Uint32(b[12:])
	return h, nil
}

// AppendOption appends an option request (header and data).
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, MagicOption)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// AppendOptionReplyHeader appends an option reply header.
func AppendOptionReplyHeader(b []byte, opt, typ, length uint32) []byte {
	b = binary.BigEndian.AppendUint64(b, MagicOptionReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	return binary.BigEndian.AppendUint32(b, length)
}

// OptionReplyHeader is a decoded option reply header.
type OptionReplyHeader struct {
	Option uint32
	Type   uint32
	Length uint32
}

// DecodeOptionReplyHeader decodes a 20-byte option reply header.
func DecodeOptionReplyHeader(b []byte) (OptionReplyHeader, error) {
	var h OptionReplyHeader
	if len(b) < OptionReplyHeaderSize {
		return h, ErrShort
	}
	if m := binary.BigEndian.Uint64(b); m != MagicOptionReply {
		return h, fmt.Errorf("%w: option reply magic %#x", ErrMalformed, m)
	}
	h.Option = binary.BigEndian.Uint32(b[8:])
	h.Type = binary.BigEndian.Uint32(b[12:])
	h.Length = binary.BigEndian.Uint32(b[16:])
	return h, nil
}

// InfoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type InfoRequest struct {
	Name  string
	Infos []uint16
}

// ParseInfoRequest parses NBD_OPT_INFO / NBD_OPT_GO data: a 32-bit name
// length, the name, a 16-bit count and that many 16-bit info types. The
// data must be exactly that long.
func ParseInfoRequest(data []byte) (InfoRequest, error) {
	var r InfoRequest
	if len(data) < 6 {
		return r, ErrShort
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-6) {
		return r, fmt.Errorf("%w: name length %d exceeds option length %d", ErrMalformed, n, len(data))
	}
	if n > MaxString {
		return r, fmt.Errorf("%w: name length %d exceeds %d", ErrMalformed, n, MaxString)
	}
	r.Name = string(data[4 : 4+n])
	rest := data[4+n:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return r, fmt.Errorf("%w: %d info requests need %d bytes, have %d", ErrMalformed, count, 2*count, len(rest))
	}
	if count > 0 {
		r.Infos = make([]uint16, count)
		for i := range r.Infos {
			r.Infos[i] = binary.BigEndian.Uint16(rest[2*i:])
		}
	}
	return r, nil
}

// AppendInfoRequest appends NBD_OPT_INFO / NBD_OPT_GO data.
func AppendInfoRequest(b []byte, r InfoRequest) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Name)))
	b = append(b, r.Name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Infos)))
	for _, t := range r.Infos {
		b = binary.BigEndian.AppendUint16(b, t)
	}
	return b
}

// MetaContextRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
type MetaContextRequest struct {
	Export  string
	Queries []string
}

// MaxMetaQueries bounds the number of queries ParseMetaContextRequest accepts.
const MaxMetaQueries = 256

// ParseMetaContextRequest parses meta context option data: a 32-bit export
// name length and name, a 32-bit query count, then per query a 32-bit
// length and the query string. Trailing bytes are an error.
func ParseMetaContextRequest(data []byte) (MetaContextRequest, error) {
	var r MetaContextRequest
	rest := data
	name, rest, err := takeString(rest)
	if err != nil {
		return r, err
	}
	r.Export = name
	if len(rest) < 4 {
		return r, ErrShort
	}
	count := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	// Each query needs at least 4 bytes: bound count by the data before
	// allocating anything.
	if uint64(count)*4 > uint64(len(rest)) {
		return r, fmt.Errorf("%w: %d queries do not fit in %d bytes", ErrMalformed, count, len(rest))
	}
	if count > MaxMetaQueries {
		return r, fmt.Errorf("%w: %d queries, at most %d", ErrMalformed, count, MaxMetaQueries)
	}
	if count > 0 {
		r.Queries = make([]string, 0, count)
	}
	for i := uint32(0); i < count; i++ {
		var q string
		q, rest, err = takeString(rest)
		if err != nil {
			return r, err
		}
		r.Queries = append(r.Queries, q)
	}
	if len(rest) != 0 {
		return r, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(rest))
	}
	return r, nil
}

func takeString(b []byte) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, ErrShort
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return "", nil, fmt.Errorf("%w: string length %d exceeds remaining %d bytes", ErrMalformed, n, len(b)-4)
	}
	if n > MaxString {
		return "", nil, fmt.Errorf("%w: string length %d exceeds %d", ErrMalformed, n, MaxString)
	}
	return string(b[4 : 4+n]), b[4+n:], nil
}

// AppendMetaContextRequest appends meta context option data.
func AppendMetaContextRequest(b []byte, r MetaContextRequest) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Export)))
	b = append(b, r.Export...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Queries)))
	for _, q := range r.Queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// Extent is one block status descriptor.
type Extent struct {
	Length uint32
	Flags  uint32
}

// AppendBlockStatusChunk appends a whole NBD_REPLY_TYPE_BLOCK_STATUS chunk
// for one metadata context.
func AppendBlockStatusChunk(b []byte, flags uint16, handle uint64, contextID uint32, ext []Extent) []byte {
	b = AppendStructuredHeader(b, flags, ReplyTypeBlockStatus, handle, uint32(4+8*len(ext)))
	b = binary.BigEndian.AppendUint32(b, contextID)
	for _, e := range ext {
		b = binary.BigEndian.AppendUint32(b, e.Length)
		b = binary.BigEndian.AppendUint32(b, e.Flags)
	}
	return b
}

// ParseBlockStatus parses the payload of a block status chunk.
func ParseBlockStatus(p []byte) (contextID uint32, ext []Extent, err error) {
	if len(p) < 12 || (len(p)-4)%8 != 0 {
		return 0, nil, fmt.Errorf("%w: block status payload of %d bytes", ErrMalformed, len(p))
	}
	contextID = binary.BigEndian.Uint32(p)
	p = p[4:]
	ext = make([]Extent, len(p)/8)
	for i := range ext {
		ext[i].Length = binary.BigEndian.Uint32(p[8*i:])
		ext[i].Flags = binary.BigEndian.Uint32(p[8*i+4:])
	}
	return contextID, ext, nil
}

// ParseErrorChunk parses the payload of an error chunk (either type).
func ParseErrorChunk(p []byte) (errno uint32, msg string, err error) {
	if len(p) < 6 {
		return 0, "", ErrShort
	}
	errno = binary.BigEndian.Uint32(p)
	n := int(binary.BigEndian.Uint16(p[4:]))
	if n > len(p)-6 {
		return 0, "", fmt.Errorf("%w: error message length %d exceeds payload", ErrMalformed, n)
	}
	return errno, string(p[6 : 6+n]), nil
}

// CommandName returns the NBD name of a command for logs and metrics.
func CommandName(cmd uint16) string {
	switch cmd {
	case CmdRead:
		return "read"
	case CmdWrite:
		return "write"
	case CmdDisc:
		return "disc"
	case CmdFlush:
		return "flush"
	case CmdTrim:
		return "trim"
	case CmdCache:
		return "cache"
	case CmdWriteZeroes:
		return "write_zeroes"
	case CmdBlockStatus:
		return "block_status"
	case CmdResize:
		return "resize"
	}
	return "unknown"
}

// OptionName returns the NBD name of an option for logs.
func OptionName(opt uint32) string {
	switch opt {
	case OptExportName:
		return "EXPORT_NAME"
	case OptAbort:
		return "ABORT"
	case OptList:
		return "LIST"
	case OptPeekExport:
		return "PEEK_EXPORT"
	case OptStartTLS:
		return "STARTTLS"
	case OptInfo:
		return "INFO"
	case OptGo:
		return "GO"
	case OptStructuredReply:
		return "STRUCTURED_REPLY"
	case OptListMetaContext:
		return "LIST_META_CONTEXT"
	case OptSetMetaContext:
		return "SET_META_CONTEXT"
	case OptExtendedHeaders:
		return "EXTENDED_HEADERS"
	}
	return fmt.Sprintf("option(%d)", opt)
}

// ErrnoName returns the symbolic name of an NBD error value.
func ErrnoName(e uint32) string {
	switch e {
	case 0:
		return "ok"
	case EPERM:
		return "EPERM"
	case EIO:
		return "EIO"
	case ENOMEM:
		return "ENOMEM"
	case EINVAL:
		return "EINVAL"
	case ENOSPC:
		return "ENOSPC"
	case EOVERFLOW:
		return "EOVERFLOW"
	case ENOTSUP:
		return "ENOTSUP"
	case ESHUTDOWN:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("errno(%d)", e)
}
